"""Training: crop sampling, augmentation, the semi-supervised parts, the loop, distributed runs."""

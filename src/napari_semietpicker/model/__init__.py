"""The network, its losses, heatmap targets and peak finding, and model files."""

"""Crop sampling: class-balanced positive crops show rare classes as often as common ones."""

from __future__ import annotations

import numpy as np
import torch

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.training.data import CropSampler, Volume


def test_balanced_classes_centre_half_the_positive_crops_on_a_rare_class() -> None:
    # 40 picks of a common class in one corner, 1 pick of a rare class in the other.
    rng = np.random.default_rng(0)
    common = rng.uniform(8, 24, size=(40, 3))
    rare = np.array([[80.0, 80.0, 80.0]])
    volume = Volume("t", np.zeros((96, 96, 96), np.float32), 10.0,
                    np.concatenate([common, rare]), np.array([0] * 40 + [1]))
    classes = [ParticleClass("common", 60.0), ParticleClass("rare", 60.0)]

    def rare_share(balanced: bool, n: int = 400) -> float:
        sampler = CropSampler([volume], (32, 32, 32), classes, 2, positive_fraction=1.0,
                              balanced_classes=balanced)
        generator = torch.Generator().manual_seed(0)
        origins = np.array([sampler._origin(volume, generator) for _ in range(n)])
        return float(np.mean(np.all((origins <= 80) & (80 < origins + 32), axis=1)))

    assert 0.4 < rare_share(balanced=True) < 0.6  # one of the two classes, drawn uniformly
    assert rare_share(balanced=False) < 0.1  # one pick of 41

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


def test_a_partial_volume_is_cropped_and_labelled_only_around_its_answers() -> None:
    """A reviewed tomogram's answers (one accepted pick, one rejected place) label only
    their neighbourhood: every crop holds one of them, and target voxels farther than a
    radius from both are unknown (NaN), while those near them are known."""
    accepted, rejected = np.array([[40.0, 40.0, 40.0]]), np.array([[120.0, 120.0, 120.0]])
    volume = Volume("t", np.zeros((160, 160, 160), np.float32), 10.0, accepted,
                    np.array([0]), rejected, partial=True)
    classes = [ParticleClass("big", 80.0), ParticleClass("small", 40.0)]
    sampler = CropSampler([volume], (32, 32, 32), classes, 2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        origin = sampler._origin(volume, generator)
        inside = [np.all((origin <= c) & (c < origin + 32)) for c in (accepted[0], rejected[0])]
        assert any(inside)
        target = sampler._target(volume, origin)
        centre = (accepted[0] if inside[0] else rejected[0]) - origin
        radius_out = (8.0 if inside[0] else 4.0) / 2  # 80 or 40 A at 10 A, stride 2
        grid = np.indices(target.shape[1:]).reshape(3, -1).T
        distance = np.linalg.norm(grid - (centre + 0.5) / 2 + 0.5, axis=1).reshape(target.shape[1:])
        assert np.isfinite(target[:, distance <= radius_out - 0.5]).all()
        assert np.isnan(target[:, distance > radius_out + 0.5]).all()
        if inside[0]:
            assert np.nanmax(target[0]) > 0.8  # the accepted pick's Gaussian
        else:
            assert np.nanmax(target) == 0.0  # nothing centred at a rejected place


def test_a_complete_volume_has_no_unknown_target_voxels() -> None:
    volume = Volume("t", np.zeros((64, 64, 64), np.float32), 10.0, np.array([[30.0, 30, 30]]),
                    np.array([0]))
    sampler = CropSampler([volume], (32, 32, 32), [ParticleClass("big", 80.0)], 2)
    assert np.isfinite(sampler._target(volume, np.array([10, 10, 10]))).all()

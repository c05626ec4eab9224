"""Classical template matching: FFT normalised cross-correlation over rotations (CPU, scipy).

The baseline a learned picker must clear, and a way to propose picks without any labels.
Per class, the class template (the simulator's density map for that class) is rotated to
a set of orientations, filtered by the tomogram's missing wedge and made dark (protein is
dark in cryo-ET), and correlated with the normalised tomogram. The score of a voxel is the
largest local normalised cross-correlation (NCC, Roseman 2003) over orientations:
``sum(t * f) / (N sigma_f)``, where the template ``t`` has zero mean and unit variance
in a ball of the class radius (``N`` voxels) and ``sigma_f`` is the tomogram's standard
deviation in that ball around the voxel. Peaks are local maxima of that map (the same
max-pool NMS as the network's heatmaps, at stride 1).

Thresholds: tuned on labelled tomograms with :func:`thresholds.choose_thresholds`, or,
without labels, the score one false alarm per tomogram would reach if the map were
Gaussian noise (:func:`noise_threshold`, as in Rickgauer et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import fft
from scipy.spatial.transform import Rotation
from scipy.special import erfcinv

from ..classes import ParticleClass
from ..io.picks import empty_picks, picks_from_positions
from ..io.tomogram import Tomogram, normalize
from ..model.heatmap import find_peaks, nms_kernels
from ..simulate import class_template, missing_wedge_mask, render_particle
from .predict import PeakCache

#: Candidates are kept from this many standard deviations of the score map above its mean.
CANDIDATE_SIGMAS = 2.0


@dataclass
class MatchConfig:
    """``rotations``: orientations per class (the identity first, then uniformly random
    ones from ``seed``); ``false_alarms``: expected noise peaks per tomogram and class at
    the label-free threshold."""

    rotations: int = 24
    seed: int = 0
    false_alarms: float = 1.0
    wedge: bool = True


@dataclass
class MatchResult:
    """Scored candidate peaks of one tomogram and the label-free threshold per class."""

    peaks: PeakCache
    noise_thresholds: dict[str, float]


def rotation_set(count: int, seed: int = 0) -> np.ndarray:
    """``count`` rotation matrices (count, 3, 3): the identity, then uniform random ones."""
    if count < 1:
        raise ValueError(f"template matching needs at least one rotation, got {count}")
    rest = Rotation.random(count - 1, random_state=seed).as_matrix() if count > 1 \
        else np.zeros((0, 3, 3))
    return np.concatenate([np.eye(3)[None], rest.reshape(-1, 3, 3)])


def ball(radius: float) -> np.ndarray:
    """Boolean cube of side ``2 ceil(radius) + 1``, True within ``radius`` of its centre."""
    half = int(np.ceil(radius))
    grid = np.indices((2 * half + 1,) * 3) - half
    return (grid**2).sum(axis=0) <= radius**2


def class_templates(particle_class: ParticleClass, voxel_size: float,
                    rotations: np.ndarray, wedge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rotated dark templates of a class, each zero-mean and unit-variance in a ball of the
    class radius and zero outside it: (R, S, S, S), with that ball mask (S, S, S)."""
    template = class_template(particle_class, voxel_size)
    mask = ball(particle_class.radius_A / voxel_size)
    side = mask.shape[0]
    centre = np.full(3, (side - 1) / 2)
    out = np.zeros((len(rotations), side, side, side), dtype=np.float32)
    wedge_mask = missing_wedge_mask(mask.shape) if wedge else None
    for i, rotation in enumerate(rotations):
        box = np.zeros(mask.shape, dtype=np.float32)
        render_particle(box, template, centre, rotation, voxel_size)
        if wedge_mask is not None:
            box = fft.irfftn(fft.rfftn(box) * wedge_mask, box.shape).astype(np.float32)
        values = -box[mask]  # protein is dark
        spread = values.std()
        out[i][mask] = (values - values.mean()) / (spread if spread > 0 else 1.0)
    return out, mask


def noise_threshold(score_map: np.ndarray, n_rotations: int, false_alarms: float = 1.0) -> float:
    """The score a Gaussian noise map of this spread reaches ``false_alarms`` times over
    all its voxels and orientations: ``sigma sqrt(2) erfcinv(2 k / (voxels x rotations))``."""
    trials = score_map.size * max(1, n_rotations)
    sigma = float(np.std(score_map, dtype=np.float64))
    return float(sigma * np.sqrt(2.0) * erfcinv(2.0 * min(false_alarms / trials, 0.5)))


def match_tomogram(tomogram: Tomogram, classes: Sequence[ParticleClass],
                   config: MatchConfig | None = None,
                   on_progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> MatchResult:
    """Score maps of every class on one tomogram, their peaks and label-free thresholds.

    Picks are in Angstrom from the volume corner; ``score`` is the NCC.
    """
    config = config or MatchConfig()
    rotations = rotation_set(config.rotations, config.seed)
    volume = normalize(tomogram.data, name=tomogram.name)
    shape = np.array(volume.shape)
    radii = [int(np.ceil(c.radius_A / tomogram.voxel_size)) for c in classes]
    padded = tuple(fft.next_fast_len(int(n)) for n in shape + 2 * max(radii))
    tomo_spectrum = fft.rfftn(volume, padded, workers=-1)
    squared_spectrum = fft.rfftn(volume.astype(np.float32) ** 2, padded, workers=-1)
    crop = tuple(slice(0, int(n)) for n in shape)
    kernels = nms_kernels(classes, tomogram.voxel_size, 1)
    tables, thresholds = [], {}
    total, done = len(classes) * len(rotations), 0
    for cls, kernel in zip(classes, kernels, strict=True):
        templates, mask = class_templates(cls, tomogram.voxel_size, rotations, config.wedge)
        n = float(mask.sum())
        mask_spectrum = np.conj(fft.rfftn(_centred(mask.astype(np.float32), padded), workers=-1))
        local_mean = fft.irfftn(tomo_spectrum * mask_spectrum, padded, workers=-1)[crop] / n
        local_sq = fft.irfftn(squared_spectrum * mask_spectrum, padded, workers=-1)[crop] / n
        local_std = np.sqrt(np.maximum(local_sq - local_mean**2, 1e-6)) * n
        del local_mean, local_sq
        best = np.full(volume.shape, -np.inf, dtype=np.float32)
        for template in templates:
            if should_stop is not None and should_stop():
                raise InterruptedError("template matching stopped")
            spectrum = np.conj(fft.rfftn(_centred(template, padded), workers=-1))
            np.maximum(best, fft.irfftn(tomo_spectrum * spectrum, padded, workers=-1)[crop]
                       / local_std, out=best)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        thresholds[cls.name] = noise_threshold(best, len(rotations), config.false_alarms)
        floor = float(best.mean() + CANDIDATE_SIGMAS * best.std())
        positions, scores = find_peaks(torch.from_numpy(best), kernel, floor)
        if len(positions):
            tables.append(picks_from_positions(positions * tomogram.voxel_size,
                                               tomogram.name, cls.name, scores))
    if tables:
        picks = pd.concat(tables, ignore_index=True)
    else:
        picks = empty_picks()
        picks["score"] = pd.Series(dtype=float)
    return MatchResult(PeakCache(tomogram.name, picks), thresholds)


def _centred(box: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``box`` in a zero volume of ``shape`` with its centre voxel at index 0 (wrapped), so
    that correlating with it measures the tomogram around each voxel."""
    out = np.zeros(shape, dtype=np.float32)
    half = box.shape[0] // 2
    out[tuple(slice(0, s) for s in box.shape)] = box
    return np.roll(out, (-half,) * 3, axis=(0, 1, 2))

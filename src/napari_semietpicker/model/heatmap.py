"""Gaussian heatmap targets and max-pool peak finding (the paper's section 2.2).

Heatmaps live on an output grid ``stride`` times coarser than the input; output index
``i`` covers input voxels around ``(i + 0.5) * stride - 0.5`` (:mod:`.geometry`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from ..classes import ParticleClass


def class_sigmas(classes: Sequence[ParticleClass], voxel_size: float, stride: int) -> np.ndarray:
    """Gaussian sigma per class in output voxels: half the particle radius."""
    return np.array([c.radius_A / 2.0 / (voxel_size * stride) for c in classes], dtype=float)


#: The NMS window reaches this fraction of a particle's radius on each side: two maxima
#: closer than that lie on one particle (a CZII hit is within half a radius), while two
#: particles are never closer than about two radii.
NMS_REACH = 0.5


def nms_kernels(classes: Sequence[ParticleClass], voxel_size: float, stride: int,
                reach: float = NMS_REACH) -> list[int]:
    """Max-pool kernel per class (odd, >= 3): reaches ``reach`` x the radius each way
    (:data:`NMS_REACH` by default), in output voxels (``voxel_size * stride`` Angstrom)."""
    half = [max(1, math.floor(reach * c.radius_A / (voxel_size * stride) + 0.5))
            for c in classes]
    return [2 * r + 1 for r in half]


def render_targets(
    centers: np.ndarray,
    class_index: np.ndarray,
    shape: tuple[int, int, int],
    sigmas: np.ndarray,
) -> np.ndarray:
    """Heatmap (C, D, H, W) with a unit Gaussian at each centre, max where they overlap.

    ``centers`` are (N, 3) fractional output-grid positions (may lie outside the grid:
    their tails still count); each Gaussian is evaluated only within 3 sigma.
    """
    heat = np.zeros((len(sigmas), *shape), dtype=np.float32)
    for center, cls in zip(np.asarray(centers, dtype=float).reshape(-1, 3), class_index):
        sigma = float(sigmas[cls])
        reach = 3.0 * sigma
        lo = np.maximum(np.floor(center - reach).astype(int), 0)
        hi = np.minimum(np.ceil(center + reach).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        axes = [np.arange(lo[a], hi[a]) - center[a] for a in range(3)]
        g = [np.exp(-(d**2) / (2 * sigma**2)).astype(np.float32) for d in axes]
        blob = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        region = heat[cls, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.maximum(region, blob, out=region)
    return heat


#: z-slices per slab in :func:`local_maxima` on CPUs: a slab of a CZII heatmap and its
#: running maxima stay in the core's cache (about 3x faster than whole-volume passes).
MAXIMA_SLAB = 16


def local_maxima(heat: torch.Tensor, kernel: int) -> torch.Tensor:
    """Boolean mask of voxels equal to the max of their cubic neighbourhood (D, H, W).

    The cube max is separable: a window max along each axis in turn, on the volume padded
    once with -inf (border voxels see only the inside of the volume). On CPUs it runs slab
    by slab along z, each slab with ``kernel // 2`` slices of halo, so that the passes stay
    in cache; the mask is the same.
    """
    depth = heat.shape[0]
    slab = depth if heat.device.type != "cpu" else MAXIMA_SLAB
    reach = kernel // 2
    padded = F.pad(heat, [reach] * 6, value=float("-inf"))
    mask = torch.empty(heat.shape, dtype=torch.bool, device=heat.device)
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        pooled = padded[start:stop + 2 * reach]
        for dim in (2, 1, 0):
            pooled = window_max(pooled, dim, kernel)
        mask[start:stop] = heat[start:stop] == pooled
    return mask


def running_max(values: torch.Tensor, dim: int, kernel: int) -> torch.Tensor:
    """Max over a centred window of ``kernel`` (odd) voxels along ``dim``, -inf outside."""
    pad = [0, 0] * values.ndim
    pad[2 * (values.ndim - 1 - dim)] = pad[2 * (values.ndim - 1 - dim) + 1] = kernel // 2
    return window_max(F.pad(values, pad, value=float("-inf")), dim, kernel)


def window_max(values: torch.Tensor, dim: int, kernel: int) -> torch.Tensor:
    """Max over each run of ``kernel`` voxels along ``dim`` ('valid': ``kernel - 1`` shorter).

    By doubling: maxima over windows of 1, 2, 4, ... voxels, then one more step to reach
    ``kernel``, so about log2(kernel) + 1 elementwise passes (several times faster on CPUs
    than ``max_pool3d`` with a (k, 1, 1) kernel, and exactly equal).
    """
    window = values  # window[i] = max of 1 voxel from i
    span = 1
    while span < kernel:
        step = min(span, kernel - span)  # window[i] = max of span + step voxels from i
        length = window.shape[dim] - step
        window = torch.maximum(window.narrow(dim, 0, length), window.narrow(dim, step, length))
        span += step
    return window


def refine_subvoxel(heat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Quadratic sub-voxel refinement of peak positions, per axis, clipped to +-0.5."""
    pos = idx.to(torch.float32)
    shape = torch.tensor(heat.shape, device=idx.device)
    center = heat[idx[:, 0], idx[:, 1], idx[:, 2]]
    for axis in range(3):
        step = torch.zeros(3, dtype=idx.dtype, device=idx.device)
        step[axis] = 1
        lower = torch.minimum(torch.maximum(idx - step, torch.zeros_like(idx)), shape - 1)
        upper = torch.minimum(idx + step, shape - 1)
        below = heat[lower[:, 0], lower[:, 1], lower[:, 2]]
        above = heat[upper[:, 0], upper[:, 1], upper[:, 2]]
        curvature = below - 2 * center + above
        safe = curvature < -1e-6
        offset = torch.where(safe, 0.5 * (below - above) / torch.where(safe, curvature, -1.0), 0.0)
        pos[:, axis] += offset.clamp(-0.5, 0.5)
    return pos


def find_peaks(heat: torch.Tensor, kernel: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of one class heatmap (D, H, W): local maxima at or above ``floor``.

    Returns fractional output-grid positions (N, 3) and scores (N,), highest first.
    Runs wherever ``heat`` lives (GPU included); only the peaks come back to the host.
    """
    mask = local_maxima(heat, kernel) & (heat >= floor)
    idx = torch.nonzero(mask)
    scores = heat[idx[:, 0], idx[:, 1], idx[:, 2]].float()
    positions = refine_subvoxel(heat.float(), idx)
    order = torch.argsort(scores, descending=True)
    peak_positions = positions[order].cpu().numpy().astype(float)
    peak_scores = scores[order].cpu().numpy().astype(float)
    keep = _drop_plateau_twins(idx[order].cpu().numpy(), peak_scores, kernel)
    return peak_positions[keep], peak_scores[keep]


def _drop_plateau_twins(idx: np.ndarray, scores: np.ndarray, kernel: int) -> np.ndarray:
    """Indices to keep so that a flat-topped maximum (tied voxels) gives one peak.

    Two local maxima within one kernel of each other must have equal values, so only
    peaks whose score (sorted, highest first) ties another's are searched; of each such
    pair the later one (in score order) is dropped.
    """
    keep = np.ones(len(idx), dtype=bool)
    same = scores[1:] == scores[:-1]
    tied = np.flatnonzero(np.concatenate([same, [False]]) | np.concatenate([[False], same]))
    if len(tied) > 1:
        pairs = cKDTree(idx[tied]).query_pairs(kernel // 2, p=np.inf, output_type="ndarray")
        keep[tied[pairs.max(axis=1)]] = False
    return keep

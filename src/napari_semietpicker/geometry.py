"""The one coordinate convention of every grid: voxel index <-> Angstrom (docs/coordinates.md).

Positions in Angstrom are in the *tomogram's frame*: axes (z, y, x), the centre of voxel
(0, 0, 0) of the full-resolution tomogram at 0, so its voxel ``i`` is at ``i * voxel_size``.
Every grid (full, mean-binned, a zarr level, a network's output at stride R, a volume
resampled to a model's voxel size) is a :class:`Grid`: voxel ``i`` of it sits at
``offset_A + i * voxel_size``.

A grid *coarser by a factor* ``r`` (mean binning by ``f``, output stride ``R``, resampling
to ``r`` times larger voxels) covers the fine voxels ``[j*r, (j+1)*r)`` (edges) with its
voxel ``j``, so that voxel's centre sits at fine index ``(j + 0.5) * r - 0.5``. That is
where the mean of fine voxels ``j*f .. j*f+f-1`` really is, and what torch's
``align_corners=False`` resampling assumes; one rule serves binning, strides and resampling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import numpy as np

#: Two voxel sizes within 2 % are one (header rounding, 10.012 vs 10 A): data at one runs
#: through a model at the other without resampling. Positions always use each grid's own
#: size, so the tolerance never moves a pick.
VOXEL_SIZE_RTOL = 0.02


def same_voxel_size(a: float, b: float) -> bool:
    """Whether two voxel sizes count as one (within :data:`VOXEL_SIZE_RTOL`); the only
    tolerance on voxel sizes anywhere (models vs data, tomograms of a training set, copick
    spacings vs metadata, the three axes of one file)."""
    return abs(a / b - 1) <= VOXEL_SIZE_RTOL


#: A position or offset (z, y, x) in Angstrom.
Vec3 = tuple[float, float, float]


def as_vec3(values: Iterable[float]) -> Vec3:
    """``values`` (z, y, x) as a tuple of floats, typed as the three coordinates it holds."""
    return cast(Vec3, tuple(float(v) for v in values))


def output_to_input(index: np.ndarray | float, factor: float) -> np.ndarray:
    """Fine-grid index of the centre of coarse voxel ``index`` (output stride, bin, resample)."""
    return (np.asarray(index, dtype=float) + 0.5) * factor - 0.5


def input_to_output(position: np.ndarray | float, factor: float) -> np.ndarray:
    """Fractional coarse-grid index of fine-grid position ``position`` (inverse of the above)."""
    return (np.asarray(position, dtype=float) + 0.5) / factor - 0.5


@dataclass(frozen=True)
class Grid:
    """Voxels whose index ``i`` (z, y, x) sits at ``offset_A + i * voxel_size`` Angstrom."""

    voxel_size: float
    offset_A: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_angstrom(self, index: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices (fractional allowed) -> (N, 3) Angstrom in the tomogram frame."""
        return np.asarray(self.offset_A) + np.asarray(index, dtype=float) * self.voxel_size

    def to_index(self, position_A: np.ndarray) -> np.ndarray:
        """(N, 3) Angstrom in the tomogram frame -> fractional voxel indices of this grid."""
        return (np.asarray(position_A, dtype=float) - np.asarray(self.offset_A)) / self.voxel_size

    def coarser(self, factor: float) -> Grid:
        """The grid ``factor`` times coarser (binned, strided or resampled, see module notes)."""
        shift = float(output_to_input(0, factor)) * self.voxel_size
        return Grid(self.voxel_size * factor, as_vec3(o + shift for o in self.offset_A))


def resampled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """Shape of a volume resampled ``factor`` times coarser: the voxels that fit whole
    (so whole factors drop trailing planes, as mean binning does)."""
    return tuple(max(1, math.floor(n / factor + 1e-9)) for n in shape)


def _axis_taps(n_in: int, n_out: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights (K, n_out) of each output voxel along one axis.

    Coarser (factor > 1): the area each fine voxel shares with the coarse voxel (whole
    factors: the plain mean). Finer: linear interpolation at the mapped centre.
    """
    j = np.arange(n_out, dtype=float)
    if factor > 1:
        lo, hi = j * factor, (j + 1) * factor
        first = np.floor(lo + 1e-9).astype(int)
        taps = math.ceil(factor) + (0 if float(factor).is_integer() else 1)
        index = first[None, :] + np.arange(taps)[:, None]
        overlap = np.minimum(hi[None, :], index + 1) - np.maximum(lo[None, :], index)
        weight = np.clip(overlap, 0, None) / factor
        weight[index >= n_in] = 0  # only whole voxels fit, so these weigh ~0 anyway
        return np.minimum(index, n_in - 1), weight
    centre = np.clip(output_to_input(j, factor), 0, n_in - 1)
    below = np.minimum(np.floor(centre).astype(int), n_in - 1)
    frac = centre - below
    return np.stack([below, np.minimum(below + 1, n_in - 1)]), np.stack([1 - frac, frac])


def _apply_taps(block: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray
                ) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    out = np.zeros([n if a != axis else index.shape[1] for a, n in enumerate(block.shape)],
                   dtype=np.float32)
    for k in range(len(index)):
        out += np.take(block, index[k], axis=axis) * weight[k].astype(np.float32).reshape(shape)
    return out


def resample(volume: np.ndarray, factor: float, slab: int = 16) -> np.ndarray:
    """A (z, y, x) volume ``factor`` times coarser (> 1) or finer (< 1), as float32.

    Voxel ``j`` of the result is centred at input index ``(j + 0.5) * factor - 0.5``
    (:meth:`Grid.coarser`). A whole factor is exactly mean binning; other coarsening
    averages by shared area, refining interpolates linearly. Reads the (memory-mapped)
    input a slab of z planes at a time, so memory holds the result and one slab.
    """
    if factor <= 0:
        raise ValueError(f"resampling factor must be positive, got {factor}")
    shape_out = resampled_shape(volume.shape, factor)
    taps = [_axis_taps(n, m, factor) for n, m in zip(volume.shape, shape_out)]
    out = np.empty(shape_out, dtype=np.float32)
    z_index, z_weight = taps[0]
    for z0 in range(0, shape_out[0], slab):
        z1 = min(z0 + slab, shape_out[0])
        lo, hi = int(z_index[:, z0:z1].min()), int(z_index[:, z0:z1].max()) + 1
        block = np.asarray(volume[lo:hi], dtype=np.float32)
        block = _apply_taps(block, 0, z_index[:, z0:z1] - lo, z_weight[:, z0:z1])
        for axis in (1, 2):
            block = _apply_taps(block, axis, *taps[axis])
        out[z0:z1] = block
    return out


def bin_volume(volume: np.ndarray, factor: int, slab: int = 16) -> np.ndarray:
    """Mean-bin a (z, y, x) volume ``factor`` times per axis (trailing planes dropped):
    binned voxel ``j`` is the mean of voxels ``j*f .. j*f+f-1``, centred at ``(j+0.5)*f-0.5``."""
    if factor != int(factor) or factor < 1:
        raise ValueError(f"binning factor must be a whole number >= 1, got {factor}")
    return resample(volume, int(factor), slab=slab)


def window_multiple(size_multiple: int, stride: int) -> int:
    """What window sides and starts must be multiples of: the network's size multiple and its
    output stride, so that every window's output lands on whole output voxels."""
    return math.lcm(size_multiple, stride)


def plan_axis(length: int, window: int, overlap: float, multiple: int = 32
              ) -> tuple[int, list[int]]:
    """Window side and starts along one axis: the fewest windows that keep ``overlap``.

    ``length`` and ``window`` are multiples of ``multiple`` (:func:`window_multiple`); so are
    the side and every start, so window outputs fall on whole output voxels. An axis no
    longer than the window is one window; otherwise the window shrinks to the smallest
    multiple that covers the axis with that many windows (fewer voxels computed twice).
    """
    if length <= window:
        return length, [0]
    count = max(2, math.ceil((length - window * overlap) / (window * (1 - overlap))))
    while True:
        side = multiple * math.ceil(length / (count - (count - 1) * overlap) / multiple)
        side = min(side, window)
        step = (length - side) / (count - 1)
        starts = sorted({int(round(i * step / multiple)) * multiple for i in range(count)})
        longest_step = multiple * math.ceil(side * (1 - overlap) / multiple)
        if all(b - a <= longest_step for a, b in zip(starts, starts[1:])):
            return side, starts
        count += 1

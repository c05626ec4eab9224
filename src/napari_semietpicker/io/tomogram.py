"""Tomograms: MRC/REC/MAP through mrcfile, memory-mapped, at their true voxel size.

Arrays are indexed (z, y, x) with voxel centres at integer indices; positions in
Angstrom are ``offset_A + index * voxel_size`` in the tomogram's frame, the offset being 0
at full resolution and half a binned voxel less half a full one for a mean-binned
volume (:mod:`..geometry`, docs/coordinates.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import mrcfile
import numpy as np

from ..geometry import Grid, bin_volume, same_voxel_size
from .atomic import atomic_path

MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
#: mrcfile modes we read: int8, int16, float32, uint16, float16.
SUPPORTED_MODES = {0, 1, 2, 6, 12}
MIN_SIDE = 8


@dataclass
class Tomogram:
    """A volume (z, y, x) with its voxel size in Angstrom and a name (the file stem).

    ``offset_A`` is where voxel (0, 0, 0) sits in the tomogram's frame, the frame of its
    picks (non-zero for a binned volume); ``origin_A`` is the file's own origin (MRC header,
    OME translation of level 0), which picks files do not count from.
    """

    data: np.ndarray
    voxel_size: float
    name: str
    origin_A: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset_A: tuple[float, float, float] = (0.0, 0.0, 0.0)
    source: str = ""  # the file or store it was read from, for messages

    @property
    def label(self) -> str:
        """How messages name this tomogram: its file path when known, else its name."""
        return self.source or self.name

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        """Where the voxels sit in the tomogram's frame (:class:`..geometry.Grid`)."""
        return Grid(self.voxel_size, self.offset_A)

    @property
    def extent_A(self) -> np.ndarray:
        """Largest valid position (z, y, x) in Angstrom: the centre of the last voxel."""
        return self.grid.to_angstrom(np.asarray(self.shape) - 1)


def read_tomogram(path: str | Path, voxel_size: float | None = None) -> Tomogram:
    """Open an MRC-family file lazily (memory map) and check it is a usable 3D volume.

    ``voxel_size`` overrides the header (needed when the header says 0). Non-default axis
    orders (mapc/mapr/maps) are transposed back to (z, y, x); anisotropic voxels and
    complex or 4-bit modes are refused with a message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such tomogram file")
    try:
        mrc = mrcfile.mmap(path, mode="r", permissive=False)
    except Exception as err:  # mrcfile and mmap raise many kinds for damaged headers
        reason = str(err)
        if "greater than file size" in reason or "must be positive" in reason:
            reason = "the file is shorter than its header says: truncated, or a corrupted header"
        raise ValueError(f"{path}: not a readable MRC file ({reason})") from err
    # Closing drops mrcfile's reference only; the memory map stays valid for our array.
    with mrc:
        header = mrc.header
        mode = int(header.mode)
        if mode not in SUPPORTED_MODES:
            raise ValueError(
                f"{path}: MRC mode {mode} is not supported (use int8, int16, uint16, float16 "
                "or float32)"
            )
        data = mrc.data
        if data is None or data.ndim != 3:
            shape = getattr(data, "shape", None)
            raise ValueError(f"{path}: expected a 3D volume, got shape {shape}")
        axis_order = (int(header.mapc), int(header.mapr), int(header.maps))
        data = _to_zyx(data, axis_order, path)
        if min(data.shape) < MIN_SIDE:
            raise ValueError(f"{path}: volume {data.shape} is too small (each side >= {MIN_SIDE})")
        header_size = _header_voxel_size(mrc, axis_order, path)
        origin = header.origin
        origin_A = (float(origin.z), float(origin.y), float(origin.x))
    if voxel_size is None:
        if header_size is None:
            raise ValueError(
                f"{path}: the header has no voxel size; give it explicitly (--voxel-size)"
            )
        voxel_size = header_size
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"{path}: voxel size must be a positive number, got {voxel_size}")
    return Tomogram(data=data, voxel_size=float(voxel_size), name=name_from_path(path),
                    origin_A=origin_A, source=str(path))


def bin_tomogram(tomogram: Tomogram, factor: int, slab: int = 32) -> Tomogram:
    """Mean-bin a tomogram ``factor`` times on each axis (for a faster, coarser model).

    Reads the (possibly memory-mapped) volume a slab of z planes at a time, so memory holds
    the binned result and one slab in float32, never a float copy of the whole input.
    Trailing planes that do not fill a bin are dropped. Binned voxel ``j`` is the mean of
    voxels ``j*f .. j*f+f-1``, so it sits at full index ``(j + 0.5) * f - 0.5``
    (:meth:`..geometry.Grid.coarser`, the same rule as zarr levels and resampling).
    """
    if factor == 1:
        return tomogram
    if factor < 1:
        raise ValueError(f"{tomogram.name}: binning factor must be 1 or more, got {factor}")
    shape = [s // factor for s in tomogram.shape]
    if min(shape) < MIN_SIDE:
        raise ValueError(f"{tomogram.name}: shape {tomogram.shape} binned {factor}x is "
                         f"{tuple(shape)}, smaller than {MIN_SIDE} voxels on a side")
    grid = tomogram.grid.coarser(factor)
    return replace(tomogram, data=bin_volume(tomogram.data, factor, slab=slab),
                   voxel_size=grid.voxel_size, offset_A=grid.offset_A)


def name_from_path(path: str | Path) -> str:
    """The name that ties a tomogram to its picks: the file stem (CZII ``experiment``)."""
    name = Path(path).name
    for suffix in (".zarr", *MRC_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _to_zyx(data: np.ndarray, axis_order: tuple[int, int, int], path: Path) -> np.ndarray:
    """Transpose data stored as (maps, mapr, mapc) into (z, y, x) without copying."""
    if sorted(axis_order) != [1, 2, 3]:
        raise ValueError(f"{path}: invalid axis order mapc/mapr/maps = {axis_order}")
    stored = (axis_order[2], axis_order[1], axis_order[0])  # axes of data dims 0, 1, 2
    return np.transpose(data, [stored.index(axis) for axis in (3, 2, 1)])


def _header_voxel_size(mrc, axis_order: tuple[int, int, int], path: Path) -> float | None:
    sizes = np.array([mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z], dtype=float)
    if not np.all(np.isfinite(sizes)) or np.all(sizes == 0):
        return None
    if np.any(sizes <= 0) or not same_voxel_size(sizes.min(), sizes.max()):
        raise ValueError(
            f"{path}: anisotropic or invalid voxel size {tuple(sizes)} A; "
            "resample to isotropic voxels first"
        )
    return float(sizes[0])


def write_tomogram(path: str | Path, data: np.ndarray, voxel_size: float,
                   origin_A: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """Write a (z, y, x) volume as float32 MRC (or int8/int16 as given) atomically.

    ``origin_A`` (z, y, x) goes to the header origin: where voxel (0, 0, 0) lies, so that
    viewers overlay a binned volume or a heatmap on its tomogram.
    """
    data = np.asarray(data)
    if data.dtype not in (np.int8, np.int16, np.uint16, np.float16):
        data = data.astype(np.float32, copy=False)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            mrc.voxel_size = float(voxel_size)
            z, y, x = (float(v) for v in origin_A)
            mrc.header.origin = (x, y, z)


def normalize(volume: np.ndarray, name: str = "volume", sample_step: int = 4,
              copy: bool = True) -> np.ndarray:
    """Return a float32 copy with zero mean and unit variance, robust to outliers.

    Statistics come from a strided subsample of the copy; values are clipped
    to +-5 standard deviations so that gold beads and edges do not dominate. NaN or
    infinite voxels are refused: they would poison every window that touches them.
    ``copy=False`` normalises a writable float32 array in place (no second volume).
    """
    # one read of the (memory-mapped) file
    out = np.array(volume, dtype=np.float32, copy=True if copy else None)
    # A float64 sum is finite exactly when every voxel is (float32 values cannot overflow
    # it), without the voxel-sized mask of np.isfinite.
    if not np.isfinite(out.sum(dtype=np.float64)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    sample = out[::sample_step, ::sample_step, ::sample_step].astype(np.float64)
    lo, hi = np.percentile(sample, [0.1, 99.9])
    clipped = np.clip(sample, lo, hi)
    mean, std = clipped.mean(), clipped.std()
    if not std > 0:
        raise ValueError(f"{name}: constant volume (no contrast to pick from)")
    out -= np.float32(mean)
    out /= np.float32(std)
    np.clip(out, -5.0, 5.0, out=out)
    return out

"""Tomograms in OME-Zarr (copick's layout) and plain zarr, opened lazily.

The returned :class:`Tomogram` holds the zarr array itself: opening reads metadata only,
slicing reads the chunks it touches, so a 3 GB volume opens in milliseconds.

Levels and positions: level ``L`` of a pyramid is binned ``2**L`` times and its voxel size
is read from the level's own ``scale`` (in Angstrom, converted from the axes' unit). Picks
are in the frame of level 0 (its voxel ``i`` at ``i * voxel_size``). Where a level has an
OME ``translation``, its voxel 0 sits at that translation less level 0's; where it has
none (copick and the CZII data write none), the level is taken as mean-binned from level
0, so its voxel ``j`` is centred at level-0 index ``(j + 0.5) * f - 0.5`` with ``f`` the
ratio of voxel sizes (:mod:`..geometry`, docs/coordinates.md). Level 0's own translation
is kept in ``Tomogram.origin_A``, like an MRC header origin.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import Grid, as_vec3, bin_volume, same_voxel_size
from . import import_optional
from .tomogram import MIN_SIDE, Tomogram, name_from_path

#: Factors from OME-NGFF space units to Angstrom (copick writes "angstrom").
UNIT_TO_ANGSTROM = {
    "angstrom": 1.0, "picometer": 0.01, "nanometer": 10.0, "micrometer": 1e4,
    "millimeter": 1e7, "centimeter": 1e8, "meter": 1e10,
}

ZarrSource = str | Path | MutableMapping


def _zarr() -> Any:
    return import_optional("zarr", "reading zarr tomograms")


def is_zarr_path(path: str | Path) -> bool:
    """True for a directory that is a zarr store (``*.zarr`` or holding zarr metadata)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return path.suffix.lower() == ".zarr" or any(
        (path / marker).exists() for marker in (".zgroup", ".zarray", "zarr.json")
    )


def read_zarr_levels(source: ZarrSource, voxel_size: float | None = None,
                     name: str | None = None) -> list[Tomogram]:
    """All levels of a zarr tomogram, finest first, each lazy (metadata is all that is read).

    ``source`` is a path or a zarr store (copick's ``tomogram.zarr()``). OME-Zarr gives
    each level's voxel size; ``voxel_size`` overrides the level-0 size (other levels keep
    their ratio to it) and is required for plain zarr, whose levels ``"0"``, ``"1"``, ...
    are taken as binned 2x each.
    """
    zarr = _zarr()
    label = str(source) if isinstance(source, str | Path) else (name or "zarr store")
    if isinstance(source, str | Path):
        if not Path(source).exists():
            raise FileNotFoundError(f"{source}: no such zarr tomogram")
        store: Any = str(source)
        name = name or name_from_path(source)
    else:
        store = source
    try:
        node = zarr.open(store, mode="r")
    except Exception as err:  # zarr raises several unrelated types for a bad store
        raise ValueError(f"{label}: not a readable zarr store ({err})") from err
    name = name or "tomogram"
    if isinstance(node, zarr.Array):
        arrays, sizes = [node], [_given(voxel_size, label)]
        shifts: list[np.ndarray | None] = [None]
    elif _multiscales(node.attrs) is not None:
        try:
            arrays, sizes, shifts = _ome_levels(node, label)
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"{label}: malformed OME-Zarr multiscales metadata "
                             f"({type(err).__name__}: {err})") from err
        if voxel_size is not None:
            ratio = voxel_size / sizes[0]
            sizes = [s * ratio for s in sizes]
            shifts = [None if t is None else t * ratio for t in shifts]
    else:
        keys = sorted((k for k in node.array_keys() if k.isdigit()), key=int)
        if not keys:
            keys = list(node.array_keys())[:1]
        if not keys:
            raise ValueError(f"{label}: zarr group holds no array")
        size = _given(voxel_size, label)
        arrays = [node[k] for k in keys]
        sizes = [size * 2 ** i for i in range(len(keys))]
        shifts = [None] * len(keys)
    origin = np.zeros(3) if shifts[0] is None else shifts[0]
    levels = []
    for level, (array, size, shift) in enumerate(zip(arrays, sizes, shifts, strict=True)):
        if not isinstance(array, zarr.Array):
            raise ValueError(f"{label}: level {level} is not an array (a zarr group?)")
        if array.ndim != 3:
            raise ValueError(
                f"{label}: level {level} has shape {array.shape}; expected 3D (z, y, x)"
            )
        if min(array.shape) < MIN_SIDE:
            break  # coarser levels are too small to pick in
        if not (np.isfinite(size) and size > 0):
            raise ValueError(f"{label}: level {level} has invalid voxel size {size}")
        if shift is None:  # mean-binned from level 0
            offset = Grid(sizes[0]).coarser(size / sizes[0]).offset_A
        else:
            offset = as_vec3(shift - origin)
        levels.append(Tomogram(data=array, voxel_size=float(size), name=name,
                               origin_A=as_vec3(origin), offset_A=offset,
                               source=label))
    if not levels:
        raise ValueError(
            f"{label}: volume {arrays[0].shape} is too small (each side >= {MIN_SIDE})"
        )
    return levels


def read_zarr_tomogram(source: ZarrSource, level: int = 0, voxel_size: float | None = None,
                       name: str | None = None) -> Tomogram:
    """One level of a zarr tomogram, lazily (see :func:`read_zarr_levels`)."""
    levels = read_zarr_levels(source, voxel_size=voxel_size, name=name)
    if not 0 <= level < len(levels):
        label = str(source) if isinstance(source, str | Path) else levels[0].name
        raise ValueError(
            f"{label}: no level {level}; levels 0..{len(levels) - 1} are available "
            f"(shapes {[t.shape for t in levels]})"
        )
    return levels[level]


def _given(voxel_size: float | None, label: str) -> float:
    if voxel_size is None:
        raise ValueError(
            f"{label}: plain zarr has no voxel size; give it explicitly (--voxel-size)"
        )
    return float(voxel_size)


def _multiscales(attrs: Any) -> list | None:
    """NGFF 0.4 keeps ``multiscales`` at the top of the attributes, 0.5 under ``ome``."""
    ome = attrs.get("ome")
    found = attrs.get("multiscales") or (ome.get("multiscales") if isinstance(ome, dict) else None)
    return found if isinstance(found, list) and found else None


def _ome_levels(group: Any, label: str) -> tuple[list, list[float], list[np.ndarray | None]]:
    """Arrays, voxel sizes (A) and translations (A, z y x; None where a level has none)."""
    multiscales = _multiscales(group.attrs)
    if multiscales is None:
        raise ValueError(f"{label}: no OME-Zarr multiscales metadata")
    meta = multiscales[0]
    factor = _unit_factor(meta.get("axes", []), label)
    top_scale, top_shift = _transforms(meta.get("coordinateTransformations", []), label)
    arrays, sizes, shifts = [], [], []
    for dataset in meta.get("datasets", []):
        scale, shift = _transforms(dataset.get("coordinateTransformations", []), label)
        scale = scale * top_scale
        if shift is not None or top_shift is not None:
            shift = (np.zeros(3) if shift is None else shift) * top_scale \
                + (np.zeros(3) if top_shift is None else top_shift)
        if not same_voxel_size(scale.min(), scale.max()):
            raise ValueError(
                f"{label}: level {dataset.get('path')} has anisotropic scale {tuple(scale)}; "
                "resample to isotropic voxels first"
            )
        arrays.append(group[dataset["path"]])
        sizes.append(float(scale[0]) * factor)
        shifts.append(None if shift is None else shift * factor)
    if not arrays:
        raise ValueError(f"{label}: OME-Zarr multiscales lists no datasets")
    return arrays, sizes, shifts


def _transforms(items: list, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale and translation (None if absent) of the three spatial axes (the last three,
    per OME-NGFF)."""
    scale, shift = np.ones(3), None
    for item in items:
        kind = item.get("type")
        values = item.get(kind)
        if kind not in ("scale", "translation"):
            continue
        if not isinstance(values, list) or len(values) < 3:
            raise ValueError(f"{label}: unsupported OME {kind} {item!r} (expected inline values)")
        if kind == "scale":
            scale = np.asarray(values[-3:], dtype=float)
        else:
            shift = np.asarray(values[-3:], dtype=float)
    return scale, shift


def _unit_factor(axes: list, label: str) -> float:
    """Angstrom per unit of the spatial axes; no unit means Angstrom, as copick writes."""
    units: set[Any] = {a.get("unit") for a in axes
                       if isinstance(a, dict) and a.get("type") == "space"}
    units.discard(None)
    if not units:
        return 1.0
    if len(units) > 1:
        raise ValueError(f"{label}: spatial axes have different units {sorted(units)}")
    unit = units.pop()
    if unit not in UNIT_TO_ANGSTROM:
        raise ValueError(
            f"{label}: unknown axis unit {unit!r}; expected one of {list(UNIT_TO_ANGSTROM)}"
        )
    return UNIT_TO_ANGSTROM[unit]


def write_ome_zarr(path: str | Path, data: np.ndarray, voxel_size: float, levels: int = 3,
                   chunks: int = 64, overwrite: bool = False) -> None:
    """Write a (z, y, x) volume as OME-Zarr 0.4 with levels "0", "1", ... binned 2x each.

    The layout and metadata are copick's (float32, axes z, y, x in Angstrom, one ``scale``
    per level), so copick and napari-ome-zarr read it; each level also states where it lies
    (a ``translation``: mean-binned voxel 0 at level-0 index ``(2**L - 1) / 2``). The store
    is written beside ``path`` and moved into place at the end: a crash leaves no
    half-written store.
    """
    zarr = _zarr()
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    if not voxel_size > 0:
        raise ValueError(f"{path}: voxel size must be > 0, got {voxel_size}")
    pyramid = [np.asarray(data, dtype=np.float32)]
    for _ in range(1, levels):
        if min(pyramid[-1].shape) < 2 * MIN_SIDE:
            break
        pyramid.append(bin_volume(pyramid[-1], 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        group = zarr.open_group(str(tmp), mode="w", **_format2(zarr))
        datasets = []
        for level, array in enumerate(pyramid):
            grid = Grid(voxel_size).coarser(2 ** level)
            _write_array(group, str(level), array, tuple(min(chunks, s) for s in array.shape))
            datasets.append({"path": str(level), "coordinateTransformations": [
                {"type": "scale", "scale": [grid.voxel_size] * 3},
                {"type": "translation", "translation": list(grid.offset_A)}]})
        group.attrs["multiscales"] = [{
            "version": "0.4", "name": name_from_path(path),
            "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
            "datasets": datasets,
        }]
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _format2(zarr: Any) -> dict[str, Any]:
    """Arguments that make zarr 3 write the zarr v2 format (OME-Zarr 0.4, read by copick 1.x
    and zarr 2); zarr 2 writes nothing else and takes no such argument."""
    return {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def _write_array(group: Any, name: str, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    """``group[name] = data`` with ``chunks``, in zarr 2 (``create_dataset``) and zarr 3
    (``create_array``; its ``create_dataset`` is deprecated and takes no ``data``)."""
    create = group.create_array if hasattr(group, "create_array") else group.create_dataset
    array = create(name, shape=data.shape, dtype=data.dtype, chunks=chunks)
    array[...] = data

"""napari reader: tomograms (MRC/REC/MAP, zarr) and picks (CZII CSV, RELION STAR, .coords).

The probe :func:`napari_get_reader` only looks (suffix, MRC header, first line of a CSV,
STAR labels) and never raises; it returns None for anything else, so napari can try other
readers. Errors found while reading (bad values, a missing voxel size) are raised by the
returned function with a message naming the file, which napari shows to the user.

Picks formats in voxels or centred coordinates (.coords, RELION 4/5 STAR) take the voxel size
and shape from a tomogram of the same name in the same folder (``TS_01.mrc`` for
``TS_01.coords``, ``TS_01_ribosome.coords`` or STAR rows with ``rlnTomoName`` ``TS_01``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import mrcfile
import pandas as pd

from .classes import classes_for_names
from .io.formats import read_any_tomogram, read_picks
from .io.picks import REQUIRED_COLUMNS
from .io.star import CLASS_COLUMN, TOMO_NAME, read_star_table
from .io.tomogram import MRC_SUFFIXES, Tomogram, name_from_path
from .io.zarr_io import is_zarr_path
from .layers import META, image_layer, infer_role, picks_layer_name, picks_layers

LayerDataTuple = tuple[Any, dict, str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerDataTuple]]

PICKS_SUFFIXES = (".csv", ".star", ".coords", ".json")
#: Class given to .coords and STAR picks whose file names no class.
UNNAMED_CLASS = "particle"
_PROBE_BYTES = 1 << 20


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """Return a reader for a tomogram or picks file (or a list of them), else None."""
    try:
        paths = [path] if isinstance(path, str | Path) else list(path)
        if paths and all(_kind(Path(p)) is not None for p in paths):
            return read_layers
    except Exception:  # the probe must never raise, whatever napari hands it
        return None
    return None


def read_layers(path: str | Sequence[str]) -> list[LayerDataTuple]:
    """Read each path: a tomogram gives an Image layer, a picks file one Points layer per class."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerDataTuple] = []
    for p in map(Path, paths):
        kind = _kind(p)
        if kind == "tomogram":
            layers.append(image_layer(read_any_tomogram(p)))
        elif kind is not None:
            layers += picks_file_layers(p)
        else:
            raise ValueError(f"{p}: not a tomogram or picks file this plugin can read")
    return layers


def picks_file_layers(path: str | Path) -> list[LayerDataTuple]:
    """Points layers (one per class and tomogram) for the picks in ``path``, in the role
    :func:`..layers.infer_role` gives the file (the classes dock changes it); each layer
    records the file it came from (metadata ``file``)."""
    path = Path(path)
    df = read_picks_with_context(path)
    if df.empty:
        raise ValueError(f"{path}: the file holds no picks")
    classes = classes_for_names(pd.unique(df["particle_type"]))
    experiments = list(pd.unique(df["experiment"]))
    role = infer_role(df, path)
    layers = []
    for experiment in experiments:
        tomogram = _sibling_tomogram(path.parent, experiment)
        own = picks_layers(df, classes, experiment, role=role, include_empty=False,
                           voxel_size=tomogram.voxel_size if tomogram is not None else 1.0)
        if tomogram is not None:
            add_tomogram_info(own, tomogram)
        for _, attrs, _ in own:
            attrs["metadata"][META]["file"] = str(path)
            if len(experiments) > 1:  # several tomograms in one file: keep layer names apart
                attrs["name"] = picks_layer_name(attrs["metadata"][META]["class"], role,
                                                 experiment)
        layers += own
    return layers


def read_picks_with_context(path: Path) -> pd.DataFrame:
    """Read picks, taking voxel size, shape and class from the file name and a sibling tomogram.

    CSV and copick JSON need nothing. For .coords and STAR the tomogram is found beside the
    file by name; the class of a .coords file (or of a STAR without a class column) is the
    part of the file stem after the tomogram name (``TS_01_ribosome.coords`` -> ``ribosome``).
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):  # Angstrom, with tomogram and class inside
        return read_picks(path)
    if suffix == ".coords":
        tomogram = _tomogram_prefixing(path)
        if tomogram is None:
            raise ValueError(
                f"{path}: a .coords file holds x y z in voxels; put its tomogram beside it, "
                f"named like the file ({path.stem}.mrc, or TOMO.mrc for TOMO_<class>.coords), "
                "so that its voxel size is known"
            )
        return read_picks(path, voxel_size=tomogram.voxel_size, tomogram_name=tomogram.name,
                          particle_type=_class_from_stem(path.stem, [tomogram.name]))
    particles, _ = read_star_table(path)
    names = (sorted(set(particles[TOMO_NAME].astype(str))) if TOMO_NAME in particles
             else [path.stem])
    tomograms = [t for t in (_sibling_tomogram(path.parent, n) for n in names) if t is not None]
    sizes = {t.voxel_size for t in tomograms}
    if len(sizes) > 1:
        raise ValueError(f"{path}: the tomograms beside it have different voxel sizes {sizes}")
    particle_type = None if CLASS_COLUMN in particles else _class_from_stem(path.stem, names)
    try:
        return read_picks(path, particle_type=particle_type,
                          voxel_size=sizes.pop() if sizes else None,
                          shape={t.name: t.shape for t in tomograms} or None,
                          tomogram_name=None if TOMO_NAME in particles else path.stem)
    except ValueError as err:
        if len(tomograms) == len(names):
            raise
        raise ValueError(
            f"{err}; put the tomogram(s) ({', '.join(names[:3])}.mrc) beside the STAR file so "
            "that their voxel size and shape are known"
        ) from err


def add_tomogram_info(layers: Iterable[LayerDataTuple], tomogram: Tomogram) -> None:
    """Record the tomogram's voxel size and shape in picks layers' metadata (in place), so
    that they can later be saved in formats that need them (RELION 5 STAR, .coords)."""
    for _, attrs, _ in layers:
        attrs["metadata"][META].update(voxel_size=tomogram.voxel_size,
                                       shape=list(tomogram.shape))


def _kind(path: Path) -> str | None:
    """``"tomogram"``, ``"picks"`` or None, from a quick look at the file."""
    name = path.name.lower()
    if name.endswith(".zarr") or path.is_dir():
        return "tomogram" if is_zarr_path(path) else None
    if not path.is_file():
        return None
    if name.endswith(MRC_SUFFIXES):
        return "tomogram" if _is_mrc(path) else None
    suffix = path.suffix.lower()
    if suffix not in PICKS_SUFFIXES:
        return None
    head = _head(path)
    if head is None:
        return None
    if suffix == ".csv":
        first = head.splitlines()[0] if head.strip() else ""
        columns = {c.strip().strip('"') for c in first.split(",")}
        return "picks" if set(REQUIRED_COLUMNS) <= columns else None
    if suffix == ".json":  # a copick picks file (one run, one class)
        return "picks" if '"pickable_object_name"' in head else None
    if suffix == ".star":
        markers = ("_rlnCoordinateX", "_rlnCenteredCoordinateXAngst")
        return "picks" if any(m in head for m in markers) else None
    return "picks" if _is_coords(head) else None


def _is_mrc(path: Path) -> bool:
    try:
        with mrcfile.open(path, header_only=True, permissive=False):
            return True
    except Exception:  # mrcfile raises ValueError, OSError, EOFError and more on junk
        return False


def _head(path: Path) -> str | None:
    """The start of a text file, or None for binary or unreadable files."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_PROBE_BYTES)
        return None if b"\0" in raw else raw.decode("utf-8-sig")  # a BOM is no column
    except (OSError, UnicodeDecodeError):
        return None


def _is_coords(head: str) -> bool:
    """True when the first data line is three numbers (an empty file counts too)."""
    for line in head.splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            try:
                return len([float(p) for p in parts]) == 3
            except ValueError:
                return False
    return True


def _tomogram_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.name.lower().endswith((*MRC_SUFFIXES, ".zarr"))]


def _sibling_tomogram(folder: Path, name: str) -> Tomogram | None:
    """The tomogram called ``name`` in ``folder`` (MRC family or zarr), if one opens."""
    for path in _tomogram_files(folder):
        if name_from_path(path) == name:
            try:
                return read_any_tomogram(path)
            except (ValueError, OSError, ImportError):
                continue
    return None


def _tomogram_prefixing(path: Path) -> Tomogram | None:
    """The tomogram beside ``path`` whose name is the file stem or starts it (``TOMO_x``),
    the longest such name first."""
    names = {name_from_path(p) for p in _tomogram_files(path.parent)}
    for name in sorted(names, key=len, reverse=True):
        if path.stem == name or _class_from_stem(path.stem, [name]) != path.stem:
            tomogram = _sibling_tomogram(path.parent, name)
            if tomogram is not None:
                return tomogram
    return None


def _class_from_stem(stem: str, tomogram_names: Sequence[str]) -> str:
    """``TOMO_ribosome`` -> ``ribosome`` for a tomogram ``TOMO``; ``TOMO`` -> ``particle``;
    a stem naming no tomogram is itself the class (``ribosome.star``)."""
    for name in sorted(tomogram_names, key=len, reverse=True):
        if stem == name:
            return UNNAMED_CLASS
        for sep in ("_", "-", "."):
            if stem.startswith(name + sep) and len(stem) > len(name) + 1:
                return stem[len(name) + 1:]
    return stem

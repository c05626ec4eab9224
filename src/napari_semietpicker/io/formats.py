"""One entry point for picks and tomograms in the field's formats, and conversion between them.

Picks formats (chosen by suffix, or by ``format``):

=================  =========  ===================================================
format             suffix     needs (besides the picks)
=================  =========  ===================================================
``csv``            .csv       nothing: CZII columns, Angstrom
``relion4``        .star      the coordinates' pixel size (``voxel_size``)
``relion5``        .star      each tomogram's shape and voxel size
``coords``         .coords    voxel size; class and tomogram name when reading
``copick``         .json      nothing: one copick picks file (one run, one class)
``copick-project`` .json      a copick configuration JSON: reads/writes its runs
=================  =========  ===================================================

A ``.star`` file is read as RELION 5 or 4 according to its columns and written as RELION 5
unless ``format="relion4"``. A ``.json`` that is a copick configuration (it lists
``pickable_objects``) is a project; any other ``.json`` is a single copick picks file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import write_text_atomic
from .copick_io import open_project, read_copick_picks, write_copick_picks
from .picks import empty_picks, read_picks_csv, validate_picks, write_picks_csv
from .star import (
    ShapeSpec,
    VoxelSizeSpec,
    read_coords,
    read_star,
    star_version,
    write_coords,
    write_star,
)
from .tomogram import Tomogram, bin_tomogram, read_tomogram
from .zarr_io import is_zarr_path, read_zarr_tomogram

PICKS_FORMATS = ("csv", "relion4", "relion5", "coords", "copick", "copick-project")
_SUFFIXES = {".csv": "csv", ".star": "star", ".coords": "coords", ".json": "json"}


def picks_format(path: str | Path, format: str | None = None, *, reading: bool = True) -> str:
    """The picks format of ``path``: ``format`` if given, else from suffix and content."""
    path = Path(path)
    if format is not None:
        if format not in PICKS_FORMATS:
            raise ValueError(
                f"{path}: unknown picks format {format!r}; expected one of {PICKS_FORMATS}"
            )
        return format
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: unknown picks file type {path.suffix!r}; use .csv, .star, .coords or "
            f".json, or give the format ({', '.join(PICKS_FORMATS)})"
        )
    if kind == "star":
        return star_version(path) if reading else "relion5"
    if kind == "json":
        return "copick-project" if _is_copick_config(path) else "copick"
    return kind


def read_picks(path: str | Path, *, particle_type: str | None = None,
               voxel_size: VoxelSizeSpec | None = None, shape: ShapeSpec | None = None,
               tomogram_name: str | None = None, format: str | None = None,
               user_id: str | None = None, session_id: str | None = None) -> pd.DataFrame:
    """Read picks in any supported format as a picks table (Angstrom from the corner).

    ``particle_type`` and ``tomogram_name`` fill in what a format lacks (.coords, STAR
    without class or tomogram columns); ``voxel_size`` and ``shape`` (one for all, or a
    mapping per tomogram name) convert voxel or centred coordinates. ``user_id`` and
    ``session_id`` select picks of a copick project. A missing requirement raises
    ValueError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such picks file")
    kind = picks_format(path, format)
    if kind == "csv":
        return read_picks_csv(path)
    if kind in ("relion4", "relion5"):
        return read_star(path, voxel_size=voxel_size, shape=shape if kind == "relion5" else None,
                         particle_type=particle_type, tomogram_name=tomogram_name)
    if kind == "coords":
        return read_coords(path, voxel_size=voxel_size, particle_type=particle_type,
                           tomogram_name=tomogram_name)
    if kind == "copick":
        return _read_copick_json(path, tomogram_name)
    return read_copick_picks(open_project(path), user_id=user_id, session_id=session_id)


def write_picks(df: pd.DataFrame, path: str | Path, *, voxel_size: VoxelSizeSpec | None = None,
                shape_by_experiment: ShapeSpec | None = None, format: str | None = None,
                keep_previous: bool = False, user_id: str = "semietpicker",
                session_id: str = "0") -> None:
    """Write a picks table in the format of ``path`` (or ``format``), atomically.

    ``voxel_size`` (one, or a mapping per tomogram name) is the pixel size of voxel
    coordinates (RELION 4, .coords: pixel = Angstrom / voxel size) or, with
    ``shape_by_experiment`` (one (z, y, x) or one per tomogram), defines each tomogram's
    centre (RELION 5). Copick picks are stored under ``user_id``/``session_id`` (copick's
    session "0" marks picks made by a tool). ``keep_previous`` keeps a numbered backup
    (``<name>.bak``, ``.bak2``, ...).
    """
    path = Path(path)
    kind = picks_format(path, format, reading=False)
    if kind == "csv":
        write_picks_csv(df, path, keep_previous=keep_previous)
    elif kind in ("relion4", "relion5"):
        write_star(df, path, version="relion4" if kind == "relion4" else "relion5",
                   voxel_size=voxel_size, shape=shape_by_experiment,
                   keep_previous=keep_previous)
    elif kind == "coords":
        write_coords(df, path, voxel_size=voxel_size, keep_previous=keep_previous)
    elif kind == "copick":
        _write_copick_json(df, path, user_id, session_id, keep_previous)
    else:
        write_copick_picks(open_project(path), df, user_id=user_id, session_id=session_id)


def convert_picks(src: str | Path, dst: str | Path, *, format: str | None = None,
                  tomogram: str | Path | Tomogram | None = None,
                  particle_type: str | None = None, tomogram_name: str | None = None,
                  voxel_size: float | None = None, shape: ShapeSpec | None = None,
                  out_voxel_size: float | None = None, out_shape: ShapeSpec | None = None,
                  user_id: str | None = None, session_id: str | None = None,
                  keep_previous: bool = False) -> pd.DataFrame:
    """Convert picks from ``src`` to ``dst`` (formats from suffixes; ``format`` for ``dst``).

    ``tomogram`` (a path or :class:`Tomogram`) supplies the voxel size, shape and name
    that voxel and centred formats need; ``voxel_size``/``shape`` override it, and
    ``out_voxel_size``/``out_shape`` differ for the output (e.g. bin-4 .coords to
    unbinned RELION 4). ``user_id``/``session_id`` select copick input and name copick
    output (default ``semietpicker``/``0``). Returns the table that was written.
    """
    if tomogram is not None and not isinstance(tomogram, Tomogram):
        tomogram = read_any_tomogram(tomogram)
    if tomogram is not None:
        voxel_size = tomogram.voxel_size if voxel_size is None else voxel_size
        shape = tomogram.shape if shape is None else shape
        tomogram_name = tomogram.name if tomogram_name is None else tomogram_name
    df = read_picks(src, particle_type=particle_type, voxel_size=voxel_size, shape=shape,
                    tomogram_name=tomogram_name, user_id=user_id, session_id=session_id)
    write_picks(df, dst, format=format,
                voxel_size=voxel_size if out_voxel_size is None else out_voxel_size,
                shape_by_experiment=shape if out_shape is None else out_shape,
                keep_previous=keep_previous, user_id=user_id or "semietpicker",
                session_id=session_id or "0")
    return df


def read_any_tomogram(path: str | Path, level: int = 0,
                      voxel_size: float | None = None) -> Tomogram:
    """Open a tomogram lazily: MRC-family files memory-mapped, zarr/OME-Zarr directories.

    ``level`` picks a binned level: ``2**level`` times coarser. A zarr pyramid has it stored;
    an MRC file is mean-binned on reading (then held in memory, binned). ``voxel_size``
    overrides the file's level-0 size (see :func:`read_tomogram`, :func:`read_zarr_tomogram`).
    """
    if is_zarr_path(path):
        return read_zarr_tomogram(path, level=level, voxel_size=voxel_size)
    if level < 0:
        raise ValueError(f"{path}: level must be 0 or more, got {level}")
    return bin_tomogram(read_tomogram(path, voxel_size=voxel_size), 2**level)


def _is_copick_config(path: Path) -> bool:
    data = _load_json(path) if path.is_file() else None
    return isinstance(data, dict) and "pickable_objects" in data


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err


def _read_copick_json(path: Path, tomogram_name: str | None) -> pd.DataFrame:
    """One copick picks file; its run comes from the file, the argument, or its folders."""
    data = _load_json(path)
    if not isinstance(data, dict) or "pickable_object_name" not in data:
        raise ValueError(f"{path}: not a copick picks file (no pickable_object_name)")
    if data.get("unit", "angstrom") != "angstrom":
        raise ValueError(f"{path}: copick unit {data['unit']!r} is not supported (angstrom only)")
    run = data.get("run_name") or tomogram_name
    if run is None and path.parent.name == "Picks":  # ExperimentRuns/<run>/Picks/<file>.json
        run = path.parent.parent.name
    if run is None:
        raise ValueError(f"{path}: the picks file names no run; give the tomogram name")
    points = data.get("points") or []
    if not points:
        return empty_picks()
    if not isinstance(points, list):
        raise ValueError(f"{path}: copick 'points' must be a list, got {type(points).__name__}")
    try:
        xyz = np.array([[p["location"][a] for a in "xyz"] for p in points], dtype=float)
        shift = np.array([np.asarray(p.get("transformation_", np.eye(4)), dtype=float)[:3, 3]
                          for p in points])
        scores = [1.0 if p.get("score") is None else float(p["score"]) for p in points]
        xyz = xyz.reshape(len(points), 3) + shift.reshape(len(points), 3)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"{path}: malformed copick point (each needs location x, y, z as "
                         f"numbers and an optional 4x4 transformation_; {type(err).__name__}: "
                         f"{err})") from err
    df = pd.DataFrame({"experiment": str(run), "particle_type": str(data["pickable_object_name"]),
                       "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "score": scores})
    return validate_picks(df, source=str(path))


def _write_copick_json(df: pd.DataFrame, path: Path, user_id: str, session_id: str,
                       keep_previous: bool) -> None:
    """One copick picks file in copick's own layout (identity transforms, Angstrom)."""
    df = validate_picks(df, source=str(path))
    runs, classes = sorted(df["experiment"].unique()), sorted(df["particle_type"].unique())
    if len(runs) > 1 or len(classes) > 1:
        raise ValueError(
            f"{path}: a copick picks file holds one run and one class; these picks have "
            f"{len(runs)} runs and {len(classes)} classes: write to a copick project "
            "(its configuration JSON) instead"
        )
    if df.empty:
        raise ValueError(f"{path}: no picks to write (a copick picks file needs its class)")
    scores = df["score"].to_numpy(dtype=float) if "score" in df else np.ones(len(df))
    identity = np.eye(4).tolist()
    points = [{"location": {"x": x, "y": y, "z": z}, "transformation_": identity,
               "instance_id": 0, "score": float(s)}
              for x, y, z, s in zip(df["x"], df["y"], df["z"], scores, strict=True)]
    data = {"pickable_object_name": classes[0], "user_id": user_id, "session_id": session_id,
            "run_name": runs[0], "voxel_spacing": None, "unit": "angstrom",
            "points": points, "trust_orientation": False}
    write_text_atomic(path, json.dumps(data, indent=2), keep_previous=keep_previous)

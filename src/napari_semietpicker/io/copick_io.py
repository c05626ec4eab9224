"""copick projects: runs, tomograms (lazy OME-Zarr) and picks, through the copick library.

A run is a tomogram: its name is the picks table's ``experiment``; a pickable object's
name is its ``particle_type``. copick stores pick locations in Angstrom from the volume
corner, as we do (docs/design.md, coordinates), so positions pass through unchanged; a point's
transform translation (a shift refined by subtomogram averaging) is added on reading.
copick is an optional dependency, imported only when these functions run.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..geometry import same_voxel_size
from . import import_optional
from .picks import empty_picks, validate_picks
from .tomogram import Tomogram
from .zarr_io import read_zarr_levels

#: Characters copick refuses in user and session ids (it would silently replace them).
_INVALID_ID = re.compile(r'[<>:"/\\|?*\x00-\x1F\x7F\s_]')


def _copick() -> Any:
    return import_optional("copick", "copick projects")


def open_project(config_json: str | Path) -> Any:
    """Open a copick project from its configuration JSON (a ``CopickRoot``)."""
    path = Path(config_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such copick configuration file")
    copick = _copick()
    try:
        return copick.from_file(str(path))
    except (ValueError, TypeError, KeyError) as err:  # pydantic's errors are ValueErrors
        raise ValueError(f"{path}: not a usable copick configuration ({err})") from err


def list_runs(project: Any) -> list[str]:
    """Names of the project's runs (tomograms), sorted."""
    return sorted(run.name for run in project.runs)


def read_copick_tomogram(project: Any, run: str | Any, voxel_spacing: float, tomo_type: str,
                         level: int = 0) -> Tomogram:
    """One run's tomogram of ``tomo_type`` at ``voxel_spacing``, lazily, at a pyramid level.

    Level ``L`` is binned ``2**L`` times (its voxel size is read from the OME metadata).
    The tomogram is named after the run, so predicted picks carry the run name.
    """
    run = _get_run(project, run)
    spacing = _get_voxel_spacing(run, voxel_spacing)
    tomograms = spacing.get_tomograms(tomo_type)
    if not tomograms:
        types = sorted({t.tomo_type for t in spacing.tomograms})
        raise ValueError(
            f"copick run {run.name!r} at voxel spacing {spacing.voxel_size:g} A has no "
            f"{tomo_type!r} tomogram; available: {', '.join(types) or 'none'}"
        )
    levels = read_zarr_levels(tomograms[0].zarr(), name=run.name)
    if not same_voxel_size(levels[0].voxel_size, spacing.voxel_size):
        warnings.warn(
            f"copick run {run.name!r}: {tomo_type} is stored under voxel spacing "
            f"{spacing.voxel_size:g} A but its OME metadata says {levels[0].voxel_size:g} A; "
            "using the metadata",
            stacklevel=2,
        )
    if not 0 <= level < len(levels):
        raise ValueError(
            f"copick run {run.name!r}: {tomo_type} has levels 0..{len(levels) - 1}, not {level}"
        )
    return levels[level]


def tomogram_shapes(project: Any, voxel_spacing: float, tomo_type: str, level: int = 0,
                    runs: Sequence[str] | None = None) -> dict[str, tuple[int, int, int]]:
    """(z, y, x) shape of each run's tomogram, e.g. to write RELION 5 centred coordinates."""
    names = list_runs(project) if runs is None else list(runs)
    return {name: read_copick_tomogram(project, name, voxel_spacing, tomo_type, level).shape
            for name in names}


def read_copick_picks(project: Any, run: str | Sequence[str] | None = None,
                      user_id: str | Sequence[str] | None = None,
                      session_id: str | Sequence[str] | None = None,
                      object_names: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Picks of the given runs (default all) as a picks table, with copick scores.

    ``user_id``, ``session_id`` and ``object_names`` filter (a name or a list; None takes
    every one, so give ``user_id`` and ``session_id`` to avoid mixing annotators).
    """
    names = list_runs(project) if run is None else [run] if isinstance(run, str) else list(run)
    frames = []
    for name in names:
        copick_run = _get_run(project, name)
        for picks in copick_run.get_picks(object_name=object_names, user_id=user_id,
                                          session_id=session_id):
            points, transforms = picks.numpy()
            if len(points) == 0:
                continue
            xyz = points + transforms[:, :3, 3]
            scores = [1.0 if p.score is None else float(p.score) for p in picks.points]
            frames.append(pd.DataFrame({
                "experiment": copick_run.name, "particle_type": picks.pickable_object_name,
                "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "score": scores,
            }))
    if not frames:
        return empty_picks()
    return validate_picks(pd.concat(frames, ignore_index=True), source="copick picks")


def write_copick_picks(project: Any, df: pd.DataFrame, user_id: str, session_id: str,
                       create_runs: bool = False) -> None:
    """Write a picks table into the project, one copick picks file per run and class.

    Each (run, class) set replaces the points of the same user and session; the others are
    left alone. Every class must be a pickable object of the project; a run that does not
    exist is refused unless ``create_runs``. copick's own writer stores the files.
    """
    df = validate_picks(df, source="picks for copick")
    for label, value in (("user_id", user_id), ("session_id", session_id)):
        if not value or _INVALID_ID.search(value):
            raise ValueError(
                f"copick {label} {value!r} is empty or has characters copick does not allow "
                "(spaces, underscores, <>:\"/\\|?*); use dashes instead"
            )
    objects = {obj.name for obj in project.pickable_objects}
    unknown = sorted(set(df["particle_type"]) - objects)
    if unknown:
        raise ValueError(
            f"classes {', '.join(unknown)} are not pickable objects of the copick project "
            f"(it has {', '.join(sorted(objects)) or 'none'}); add them to its configuration"
        )
    runs = set(list_runs(project))
    missing = sorted(set(df["experiment"]) - runs)
    if missing and not create_runs:
        raise ValueError(
            f"runs {', '.join(missing[:5])} are not in the copick project; "
            "pass create_runs=True to create them"
        )
    for name, rows in df.groupby("experiment", sort=True):
        copick_run = project.new_run(name) if name in missing else _get_run(project, name)
        for object_name, group in rows.groupby("particle_type", sort=True):
            picks = copick_run.new_picks(object_name, session_id=session_id, user_id=user_id,
                                         exist_ok=True)
            scores = group["score"].to_numpy(dtype=float) if "score" in group else None
            picks.from_numpy(group[["x", "y", "z"]].to_numpy(dtype=float), scores=scores)


def _get_run(project: Any, run: str | Any) -> Any:
    if not isinstance(run, str):
        return run
    found = project.get_run(run)
    if found is None:
        available = list_runs(project)
        raise ValueError(
            f"copick project has no run {run!r}; runs: {', '.join(available[:10]) or 'none'}"
            + (" ..." if len(available) > 10 else "")
        )
    return found


def _get_voxel_spacing(run: Any, voxel_spacing: float) -> Any:
    """The run's voxel spacing closest to ``voxel_spacing`` among those that are the same
    by :func:`..geometry.same_voxel_size` (so ``10`` finds CZII's ``10.012``)."""
    matches = [s for s in run.voxel_spacings if same_voxel_size(s.voxel_size, voxel_spacing)]
    if matches:
        return min(matches, key=lambda s: abs(s.voxel_size - float(voxel_spacing)))
    available = sorted(s.voxel_size for s in run.voxel_spacings)
    raise ValueError(
        f"copick run {run.name!r} has no voxel spacing {voxel_spacing:g} A; available: "
        f"{', '.join(f'{v:g}' for v in available) or 'none'}"
    )

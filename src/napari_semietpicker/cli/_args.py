"""What the sub-commands share: argument checks (at the boundary, before any work), the
one-line error text, and the tomogram sources (files, globs or copick runs)."""

from __future__ import annotations

import argparse
import glob
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("semietpicker")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _float_where(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: a number for which ``ok`` holds (``rule`` says which, in errors)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value
    return parse


_fraction = _float_where(lambda v: 0.0 <= v < 1.0, "in [0, 1)")  # a window overlap
_positive_float = _float_where(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_share = _float_where(lambda v: 0.0 <= v <= 1.0, "in [0, 1]")  # a part of a whole


def _error_text(err: BaseException) -> str:
    """One line naming the file and the problem, for any error the CLI reports."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line, whatever the message held


def _expand(patterns: Sequence[str]) -> list[Path]:
    """Files from paths or glob patterns, in a stable order; a pattern matching nothing errs."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise ValueError(f"{pattern}: no files match")
        paths += [Path(m) for m in matches]
    return paths


def _read_tomograms(sources: Sequence, args: argparse.Namespace):
    """Tomogram sources (paths, copick runs) opened lazily at ``--level``, ``--voxel-size``."""
    from ..pipeline import open_tomogram

    return [open_tomogram(s, args.level, args.voxel_size) for s in sources]


def _sources(args: argparse.Namespace, files: Sequence[str], runs: Sequence[str] | None):
    """Tomogram sources: files (globs) or, with ``--copick``, runs of the project (all runs
    when ``runs`` is None)."""
    from ..pipeline import CopickRun

    if files:
        return _expand(files)
    if not args.copick:
        return []
    from ..io.copick_io import list_runs, open_project

    if not args.tomo_type or args.voxel_spacing is None:
        raise ValueError("--copick needs --tomo-type (e.g. denoised) and --voxel-spacing (A)")
    project = open_project(args.copick)
    names = list(runs) if runs else list_runs(project)
    return [CopickRun(project, run, args.voxel_spacing, args.tomo_type) for run in names]


def _tomograms(args: argparse.Namespace, files: Sequence[str], runs: Sequence[str] | None):
    """The tomograms of :func:`_sources`, opened lazily at ``--level``."""
    return _read_tomograms(_sources(args, files, runs), args)


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """The options of commands that read tomograms: voxel size, level and copick source."""
    p.add_argument("--voxel-size", type=_positive_float, default=None,
                   help="override file headers (A)")
    p.add_argument("--level", type=_int_at_least(0), default=0,
                   help="binned level: 1 = 2x coarser (zarr: a pyramid level; MRC: binned on "
                        "reading)")
    p.add_argument("--copick", default=None, help="copick project config (JSON)")
    p.add_argument("--tomo-type", default=None, help="copick tomogram type, e.g. denoised")
    p.add_argument("--voxel-spacing", type=float, default=None, help="copick voxel spacing (A)")


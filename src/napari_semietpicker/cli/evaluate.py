"""``semietpicker evaluate``: the CZII score of picks against reference picks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ._args import _expand, log


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``evaluate``'s options; it runs :func:`cmd_evaluate`."""
    p = subparsers.add_parser("evaluate", help="score picks against reference picks")
    p.add_argument("predictions")
    p.add_argument("truth")
    p.add_argument("--classes", default="czii")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--runs", nargs="+", default=None,
                   help="score only these tomograms (default: every run in either file)")
    p.add_argument("--chance", nargs="+", metavar="TOMOGRAM", default=None,
                   help="the reference runs' tomograms (globs ok): also score random picks of "
                        "the same counts, the level a model must beat")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..classes import load_classes
    from ..io.formats import read_picks
    from ..metrics import chance_level, evaluate

    predictions, truth = read_picks(args.predictions), read_picks(args.truth)
    if args.runs:
        predictions = predictions[predictions["experiment"].isin(args.runs)]
        truth = truth[truth["experiment"].isin(args.runs)]
    unpicked = sorted(set(truth["experiment"]) - set(predictions["experiment"]))
    if unpicked:
        log.warning("%d reference run(s) have no predictions and count as missed: %s "
                    "(use --runs to score only some runs)", len(unpicked),
                    ", ".join(unpicked[:5]))
    classes = load_classes(args.classes)
    result = evaluate(predictions, truth, classes)
    chance = None
    if args.chance:
        chance = chance_level(truth, _extents_by_run(args.chance, set(truth["experiment"])),
                              classes)
    if args.json:
        print(json.dumps({**result.to_dict(), **({"chance": chance} if chance else {})},
                         indent=2, allow_nan=False))
        return 0
    print(result.format_table())
    if chance:
        print("random picks of the same counts (mean of 10 draws): CZII score "
              f"{chance['score']:.4f}; mean F1 {chance['mean_f1@0.5r']:.4f} @0.5r, "
              f"{chance['mean_f1@0.75r']:.4f} @0.75r")
    return 0


def _extents_by_run(tomograms: Sequence[str], runs: set[str]) -> dict[str, tuple]:
    """Each reference run's extent in Angstrom, from its tomogram (matched by file stem)."""
    from ..io.formats import read_any_tomogram

    extents = {}
    for path in _expand(tomograms):
        tomogram = read_any_tomogram(path)
        extents[tomogram.name] = tuple(tomogram.extent_A)
    missing = sorted(runs - set(extents))
    if missing:
        raise ValueError(f"--chance: no tomogram for reference run(s) {', '.join(missing)} "
                         f"(tomograms are matched by file stem)")
    return extents

"""``semietpicker simulate``: synthetic tomograms with known picks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import _int_at_least


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``simulate``'s options; it runs :func:`cmd_simulate`."""
    p = subparsers.add_parser("simulate", help="write synthetic tomograms with known picks")
    p.add_argument("out", help="output folder (tomograms/<name>.mrc and picks.csv)")
    p.add_argument("--n", type=_int_at_least(1), default=3, help="number of tomograms")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128), metavar=("D", "H", "W"))
    p.add_argument("--voxel-size", type=float, default=10.0, help="Angstrom per voxel")
    p.add_argument("--snr", type=float, default=None,
                   help="signal-to-noise ratio (default 0.05, like real tomograms)")
    p.add_argument("--density", type=float, default=1.0,
                   help="particle density relative to the real CZII tomograms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default="czii", help="preset name or JSON/YAML file")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..classes import load_classes
    from ..simulate import simulate_dataset

    picks = simulate_dataset(args.out, n=args.n, shape=tuple(args.shape),
                             voxel_size=args.voxel_size, snr=args.snr, seed=args.seed,
                             classes=load_classes(args.classes), density=args.density)
    counts = picks.groupby("particle_type").size().to_dict()
    print(f"wrote {args.n} tomogram(s) to {Path(args.out) / 'tomograms'} and "
          f"{len(picks)} picks to {Path(args.out) / 'picks.csv'}: {counts}")
    return 0

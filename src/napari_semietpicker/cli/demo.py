"""``semietpicker demo``: simulate, train, pick and score, in napari if there is a display."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``demo``'s options; it runs :func:`cmd_demo`."""
    p = subparsers.add_parser("demo", help="simulate, train, pick and score; napari if a display")
    p.add_argument("--out", default="semietpicker-demo", help="working folder")
    p.add_argument("--headless", action="store_true", help="never open napari")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(Path(args.out), headless=args.headless, steps=args.steps)

"""The ``semietpicker`` command: simulate | train | predict | match | evaluate | convert | demo.

A thin layer over the Qt-free core: argument parsing, progress bars and messages.
Errors in the user's input end with one clear line (file and problem), not a traceback.
Each sub-command lives in its own module with its options (``add_parser``) and its
``cmd_*`` function; what they share is in :mod:`._args`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import convert, demo, evaluate, match, predict, simulate, train
from ._args import _error_text
from .train import MODES

__all__ = ["MODES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``semietpicker`` parser: the global options, then each sub-command's own."""
    parser = argparse.ArgumentParser(
        prog="semietpicker", description="Semi-supervised particle picking in cryo-ET tomograms")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (simulate, train, predict, evaluate, convert, match, demo):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semietpicker`` console script.

    Every failure ends with one line, ``semietpicker <command>: error: <file>: <problem>``,
    and exit code 2 (``-v`` shows the traceback); Ctrl-C at any time exits with 130.
    """
    command = "semietpicker"
    try:
        from .. import distributed
        from ..compute import use_available_cores

        args = build_parser().parse_args(argv)
        use_available_cores()
        command = f"semietpicker {args.command}"
        return _run(args, distributed)
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, distributed) -> int:
    worker = distributed.launched_by_torchrun() and os.environ.get("RANK", "0") != "0"
    args.quiet = args.quiet or worker  # one progress bar and one log under torchrun
    prefix = f"[rank {os.environ['RANK']}] " if distributed.launched_by_torchrun() else ""
    # Logs go to stderr (``force``: handlers other libraries installed must not put them on
    # stdout, which --json output and pipes own).
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"{prefix}%(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    failed_alone = False  # this rank stopped where the others wait in a collective
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, MemoryError,
            distributed.RankOutOfMemoryError) as err:
        failed_alone = isinstance(err, distributed.RankOutOfMemoryError)
        if args.verbose:
            raise
        print(f"semietpicker {args.command}: error: {_error_text(err)}", file=sys.stderr)
        return 2
    finally:
        if distributed.is_distributed() and not failed_alone:
            distributed.barrier()
            torch_dist = distributed.dist
            torch_dist.destroy_process_group()


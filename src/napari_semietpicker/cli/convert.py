"""``semietpicker convert``: picks from one format to another."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``convert``'s options; it runs :func:`cmd_convert`."""
    p = subparsers.add_parser("convert", help="convert picks between CSV, STAR, .coords and copick")
    p.add_argument("src", help="picks file (or copick project config)")
    p.add_argument("dst", help="file to write; the format follows the suffix")
    p.add_argument("--format", default=None,
                   help="relion4 or relion5 for .star output (default relion5)")
    p.add_argument("--tomogram", default=None,
                   help="the tomogram the picks belong to: gives voxel size, shape and name")
    p.add_argument("--voxel-size", type=float, default=None, help="pixel size of the input (A)")
    p.add_argument("--out-voxel-size", type=float, default=None,
                   help="pixel size of the output, if it differs (binning)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="tomogram shape in voxels (RELION 5 centred coordinates)")
    p.add_argument("--particle-type", default=None, help="class of files without one")
    p.add_argument("--tomogram-name", default=None, help="tomogram of files without one")
    p.add_argument("--user", default=None, help="copick user id")
    p.add_argument("--session", default=None, help="copick session id")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..io.formats import convert_picks

    table = convert_picks(
        args.src, args.dst, format=args.format, tomogram=args.tomogram,
        particle_type=args.particle_type, tomogram_name=args.tomogram_name,
        voxel_size=args.voxel_size, shape=tuple(args.shape) if args.shape else None,
        out_voxel_size=args.out_voxel_size, user_id=args.user, session_id=args.session,
        keep_previous=True)
    print(f"wrote {len(table)} picks to {args.dst}")
    return 0

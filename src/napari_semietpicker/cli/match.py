"""``semietpicker match``: picks by template matching (no model, labels optional)."""

from __future__ import annotations

import argparse

from ._args import _add_source_options, _expand, _read_tomograms


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``match``'s options; it runs :func:`cmd_match`."""
    p = subparsers.add_parser("match", help="pick by template matching: no model, labels optional")
    p.add_argument("tomograms", nargs="+", help="tomograms to pick: MRC/REC/MAP or zarr (globs)")
    p.add_argument("--out", required=True, help="picks file (.csv, .star, .coords, copick .json)")
    p.add_argument("--classes", default="czii",
                   help="preset or JSON/YAML file; each class's template is the simulator's map "
                        "of that name")
    p.add_argument("--labelled", nargs="+", default=[],
                   help="labelled tomograms to tune per-class thresholds on (with --picks)")
    p.add_argument("--picks", default=None, help="the picks of the --labelled tomograms")
    p.add_argument("--threshold", type=float, default=None,
                   help="NCC threshold for all classes (default: tuned on --labelled, else the "
                        "score of about one noise peak per tomogram and class)")
    p.add_argument("--rotations", type=int, default=24, help="orientations per class")
    _add_source_options(p)
    p.set_defaults(func=cmd_match)


def cmd_match(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..classes import load_classes
    from ..inference.template_matching import MatchConfig, match_tomogram
    from ..inference.thresholds import choose_thresholds
    from ..io.formats import read_picks, write_picks

    classes = load_classes(args.classes)
    tomograms = _read_tomograms(_expand(args.tomograms), args)
    if not tomograms:
        raise ValueError("give tomograms to pick")
    if bool(args.labelled) != bool(args.picks):
        raise ValueError("--labelled tomograms and their --picks go together")
    config = MatchConfig(rotations=args.rotations)
    tuned = None
    if args.threshold is None and args.labelled:
        labelled = _read_tomograms(_expand(args.labelled), args)
        picks = read_picks(args.picks, voxel_size=args.voxel_size)
        picks = picks[picks["experiment"].isin([t.name for t in labelled])]
        if picks.empty:
            raise ValueError(f"{args.picks}: no picks of the --labelled tomograms (experiment "
                             f"= tomogram file stem)")
        candidates = [match_tomogram(t, classes, config).peaks.picks for t in labelled]
        tuned = choose_thresholds(pd.concat(candidates, ignore_index=True), picks, classes)
        print("thresholds tuned on the labelled tomograms: "
              + ", ".join(f"{k} {v:.3f}" for k, v in tuned.items()))
    tables = []
    for tomogram in tomograms:
        result = match_tomogram(tomogram, classes, config)
        limit = args.threshold if args.threshold is not None else (
            tuned if tuned is not None else result.noise_thresholds)
        table = result.peaks.at(limit)
        counts = table.groupby("particle_type").size()
        print(f"{tomogram.name}: " + ", ".join(f"{c.name} {int(counts.get(c.name, 0))}"
                                             for c in classes))
        tables.append(table)
    merged = pd.concat(tables, ignore_index=True)
    write_picks(merged, args.out, voxel_size=tomograms[0].voxel_size, keep_previous=True,
                shape_by_experiment={t.name: t.shape for t in tomograms})
    print(f"wrote {len(merged)} picks to {args.out}")
    return 0

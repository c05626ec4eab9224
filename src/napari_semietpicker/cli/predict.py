"""``semietpicker predict``: picks from a trained model."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import cast

from ._args import _add_source_options, _fraction, _int_at_least, _tomograms


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``predict``'s options; it runs :func:`cmd_predict`."""
    p = subparsers.add_parser("predict", help="pick particles with a trained model")
    p.add_argument("model", help="model directory")
    p.add_argument("tomograms", nargs="*", help="tomograms: MRC/REC/MAP or zarr (globs ok)")
    p.add_argument("--out", required=True,
                   help="picks file: .csv (CZII), .star (RELION), .coords, copick .json, or a "
                        "copick project config to write the picks into the project")
    p.add_argument("--format", default=None,
                   help="relion4 or relion5 for .star output (default relion5)")
    p.add_argument("--runs", nargs="+", default=None, help="copick: runs to pick (default all)")
    p.add_argument("--user", default="semietpicker", help="copick: user id of written picks")
    p.add_argument("--session", default="0", help="copick: session id of written picks")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold for all classes (default: the model's per class)")
    p.add_argument("--class-threshold", nargs="+", default=[], metavar="CLASS=VALUE",
                   help="score threshold of some classes, e.g. ribosome=0.5 (the others keep "
                        "the model's, which training chose on the labelled tomograms)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the flips along z, y and x (default: on; --no-tta is 4x "
                        "faster)")
    p.add_argument("--heatmaps", default=None, help="folder for per-class heatmap MRC files")
    p.add_argument("--device", default="auto")
    p.add_argument("--window", type=_int_at_least(32), default=None,
                   help="largest window side (voxels, >= 32; default: two windows per CZII "
                   "axis)")
    p.add_argument("--overlap", type=_fraction, default=None,
                   help="shared fraction of neighbouring windows")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1,
                   help="windows per forward pass")
    p.add_argument("--precision", default="auto",
                   help="network arithmetic: auto (default: bf16 on a GPU, fp32 on a CPU), "
                        "bf16 (autocast) or fp32")
    p.add_argument("--overwrite", action="store_true",
                   help="pick again tomograms already done (default: skip them)")
    _add_source_options(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import distributed
    from ..compute import resolve_device
    from ..inference.predict import PredictConfig
    from ..io.formats import picks_format
    from ..pipeline import Picker, pick_into

    picks_format(args.out, args.format, reading=False)  # a bad --out fails before any work
    device = resolve_device(args.device)
    distributed.init_from_env(device.type)
    picker = Picker.load(args.model, device)
    card = picker.card
    chosen = {k: v for k, v in (("window", args.window), ("overlap", args.overlap),
                                ("tta", args.tta)) if v is not None}
    # unset: PredictConfig's defaults, in one place
    config = PredictConfig(**chosen, batch_size=args.batch_size, precision=args.precision)
    thresholds = args.threshold if args.threshold is not None else {
        **card.class_thresholds(), **_class_thresholds(args.class_threshold, card.classes)}
    tomograms = _tomograms(args, args.tomograms, args.runs)
    if not tomograms:
        raise ValueError("give tomograms to pick, or --copick (with --runs, or all runs)")

    def progress(tomogram):
        bar = tqdm(desc=tomogram.name, unit="window", disable=args.quiet, leave=False)

        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
            if done == total:
                bar.close()
        return on_progress

    merged = pick_into(picker, tomograms, args.out, thresholds, config,
                       overwrite=args.overwrite, heatmaps_dir=args.heatmaps, progress=progress,
                       write_options=dict(format=args.format, user_id=args.user,
                                          session_id=args.session))
    if merged is not None:
        counts = merged.groupby(["experiment", "particle_type"]).size()
        for name in [t.name for t in tomograms]:
            # the counts of this run by class (a Series under the MultiIndex), or none
            per_class = cast("Mapping[str, int]", counts.get(name, {}))
            print(f"{name}: " + ", ".join(f"{c.name} {int(per_class.get(c.name, 0))}"
                                         for c in card.classes))
        print(f"wrote {len(merged)} picks to {args.out}")
    return 0


def _class_thresholds(items: Sequence[str], classes) -> dict[str, float]:
    """``CLASS=VALUE`` items as thresholds; unknown classes and bad values are refused."""
    names = [c.name for c in classes]
    thresholds = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in names:
            raise ValueError(f"--class-threshold {item}: the model has no class {name!r} "
                             f"(it has {', '.join(names)})")
        try:
            thresholds[name] = float(value)
        except ValueError:
            raise ValueError(f"--class-threshold {item}: expected CLASS=NUMBER") from None
    return thresholds

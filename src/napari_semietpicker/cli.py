"""The ``semietpicker`` command: simulate | train | predict | match | evaluate | convert | demo.

A thin layer over the Qt-free core: argument parsing, progress bars and messages.
Errors in the user's input end with one clear line (file and problem), not a traceback.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

log = logging.getLogger("semietpicker")


# -- argument checks (at the boundary, before any work) ---------------------------------
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


def _read_tomograms(paths: Sequence[Path], args: argparse.Namespace):
    from .pipeline import open_tomogram

    return [open_tomogram(p, args.level, args.voxel_size) for p in paths]


def _sources(args: argparse.Namespace, files: Sequence[str], runs: Sequence[str] | None):
    """Tomogram sources: files (globs) or, with ``--copick``, runs of the project (all runs
    when ``runs`` is None)."""
    from .pipeline import CopickRun

    if files:
        return _expand(files)
    if not args.copick:
        return []
    from .io.copick_io import list_runs, open_project

    if not args.tomo_type or args.voxel_spacing is None:
        raise ValueError("--copick needs --tomo-type (e.g. denoised) and --voxel-spacing (A)")
    project = open_project(args.copick)
    names = list(runs) if runs else list_runs(project)
    return [CopickRun(project, run, args.voxel_spacing, args.tomo_type) for run in names]


def _tomograms(args: argparse.Namespace, files: Sequence[str], runs: Sequence[str] | None):
    """The tomograms of :func:`_sources`, opened lazily at ``--level``."""
    from .pipeline import open_tomogram

    return [open_tomogram(s, args.level, args.voxel_size) for s in _sources(args, files, runs)]


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voxel-size", type=_positive_float, default=None,
                   help="override file headers (A)")
    p.add_argument("--level", type=_int_at_least(0), default=0,
                   help="binned level: 1 = 2x coarser (zarr: a pyramid level; MRC: binned on "
                        "reading)")
    p.add_argument("--copick", default=None, help="copick project config (JSON)")
    p.add_argument("--tomo-type", default=None, help="copick tomogram type, e.g. denoised")
    p.add_argument("--voxel-spacing", type=float, default=None, help="copick voxel spacing (A)")


# -- simulate --------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from .classes import load_classes
    from .simulate import simulate_dataset

    picks = simulate_dataset(args.out, n=args.n, shape=tuple(args.shape),
                             voxel_size=args.voxel_size, snr=args.snr, seed=args.seed,
                             classes=load_classes(args.classes), density=args.density)
    counts = picks.groupby("particle_type").size().to_dict()
    print(f"wrote {args.n} tomogram(s) to {Path(args.out) / 'tomograms'} and "
          f"{len(picks)} picks to {Path(args.out) / 'picks.csv'}: {counts}")
    return 0


# -- train -----------------------------------------------------------------------------
MODES = {  # ablation switches of the paper's Table 3
    "supervised": dict(cotrain=False),
    "mean-teacher": dict(cotrain=True, multi_view=False, dropblock=False),
    "multi-view": dict(cotrain=True, multi_view=True, dropblock=False),
    "full": dict(cotrain=True, multi_view=True, dropblock=True),
}


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .classes import load_classes
    from .model.checkpoint import model_exists
    from .pipeline import TrainingSet, train
    from .training.loop import TrainConfig

    if model_exists(args.out) and not (args.overwrite or args.resume):
        raise ValueError(f"{args.out}: already holds a model; pass --resume to continue it or "
                         "--overwrite to replace it")
    classes = load_classes(args.classes)
    labelled = _sources(args, args.tomograms, args.runs)
    if not labelled:
        raise ValueError("give labelled --tomograms, or --copick with --runs")
    if args.picks:
        picks = args.picks
    elif args.copick:
        from .io.copick_io import open_project, read_copick_picks

        def picks(tomograms):
            return read_copick_picks(open_project(args.copick), [t.name for t in tomograms],
                                     user_id=args.user, session_id=args.session,
                                     object_names=[c.name for c in classes])
    else:
        raise ValueError("give --picks (CSV, STAR, copick JSON) or --copick")
    has_unlabelled = bool(args.unlabeled or args.unlabeled_runs)
    unlabelled = _sources(args, args.unlabeled, args.unlabeled_runs) if has_unlabelled else []
    training_set = TrainingSet.build(labelled, picks, classes, unlabelled, level=args.level,
                                     voxel_size=args.voxel_size)
    mode = MODES[args.mode]
    cotrain_steps = args.cotrain_steps if mode["cotrain"] else 0
    if cotrain_steps and not unlabelled:
        log.warning("no --unlabeled tomograms: training supervised only")
    config = TrainConfig(
        steps=args.steps, cotrain_steps=cotrain_steps, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, preset=args.preset, seed=args.seed, device=args.device,
        checkpoint_every=args.checkpoint_every, unlabelled_weight=args.unlabeled_weight,
        multi_view=mode.get("multi_view", True), dropblock=mode.get("dropblock", True),
        auto_thresholds=args.auto_thresholds,
        **{name: value for name, value in (("ema_alpha", args.ema_alpha),
                                           ("ema_schedule", args.ema_schedule),
                                           ("unlabelled_rampup", args.unlabeled_rampup))
           if value is not None})  # unset: TrainConfig's defaults
    interrupted: list[bool] = []

    def on_sigint(signum, frame):  # first Ctrl-C: finish the step, save, stop
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        print("\nstopping after this step (Ctrl-C again to abort without saving)",
              file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = tqdm(desc="train", unit="step", disable=args.quiet)

    def on_progress(p) -> None:
        if bar.total != p.total_steps:  # the first report (a resumed run starts later)
            bar.reset(total=p.total_steps)
            bar.update(p.step - 1)
        bar.update(p.step - bar.n)
        extra = {} if p.loss_unlabelled is None else {"loss_u": f"{p.loss_unlabelled:.4f}"}
        bar.set_postfix(phase=p.phase, loss=f"{p.loss:.4f}", **extra)

    try:
        result = train(training_set, config, args.out, resume=args.resume,
                       init_from=args.init_from, on_progress=on_progress,
                       should_stop=lambda: bool(interrupted))
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    if result.reason.startswith("diverged"):
        kept = (f"the last checkpoint in {args.out} is kept" if model_exists(args.out)
                else "no model was saved")
        print(f"{result.reason} after {result.steps_done} steps; {kept}")
        return 1
    print(f"{result.reason} after {result.steps_done} steps; model saved in {args.out}")
    return 0


# -- predict ---------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import distributed
    from .compute import resolve_device
    from .inference.predict import PredictConfig
    from .io.formats import picks_format
    from .pipeline import Picker, pick_into

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


# -- evaluate --------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    from .classes import load_classes
    from .io.formats import read_picks
    from .metrics import chance_level, evaluate

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
    from .io.formats import read_any_tomogram

    extents = {}
    for path in _expand(tomograms):
        tomogram = read_any_tomogram(path)
        extents[tomogram.name] = tuple(tomogram.extent_A)
    missing = sorted(runs - set(extents))
    if missing:
        raise ValueError(f"--chance: no tomogram for reference run(s) {', '.join(missing)} "
                         f"(tomograms are matched by file stem)")
    return extents


# -- convert ---------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    from .io.formats import convert_picks

    table = convert_picks(
        args.src, args.dst, format=args.format, tomogram=args.tomogram,
        particle_type=args.particle_type, tomogram_name=args.tomogram_name,
        voxel_size=args.voxel_size, shape=tuple(args.shape) if args.shape else None,
        out_voxel_size=args.out_voxel_size, user_id=args.user, session_id=args.session,
        keep_previous=True)
    print(f"wrote {len(table)} picks to {args.dst}")
    return 0


# -- match -----------------------------------------------------------------------------
def cmd_match(args: argparse.Namespace) -> int:
    import pandas as pd

    from .classes import load_classes
    from .inference.template_matching import MatchConfig, match_tomogram
    from .inference.thresholds import choose_thresholds
    from .io.formats import read_picks, write_picks

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


# -- demo ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), headless=args.headless, steps=args.steps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semietpicker", description="Semi-supervised particle picking in cryo-ET tomograms")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write synthetic tomograms with known picks")
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

    p = sub.add_parser("train", help="train a model on labelled (and unlabelled) tomograms")
    p.add_argument("--tomograms", nargs="+", default=[],
                   help="labelled tomograms: MRC/REC/MAP or zarr (globs ok)")
    p.add_argument("--picks", default=None,
                   help="picks file: CZII CSV, RELION STAR or copick JSON (experiment = "
                        "tomogram file stem); a CSV 'role' column marks rows 'negative' "
                        "(rejected in review: hard negatives) or 'positive' (the default)")
    p.add_argument("--unlabeled", nargs="+", default=[], help="unlabelled tomograms (globs ok)")
    p.add_argument("--runs", nargs="+", default=None, help="copick: labelled runs")
    p.add_argument("--unlabeled-runs", nargs="+", default=None, help="copick: unlabelled runs")
    p.add_argument("--user", default=None, help="copick: user id of the reference picks")
    p.add_argument("--session", default=None, help="copick: session id of the reference picks")
    p.add_argument("--classes", default="czii", help="preset name or JSON/YAML file")
    p.add_argument("--out", required=True, help="model directory")
    p.add_argument("--mode", choices=list(MODES), default="full",
                   help="semi-supervised parts to use when --unlabeled is given (ablation)")
    p.add_argument("--steps", type=_int_at_least(1), default=2000,
                   help="burn-in (supervised) steps")
    p.add_argument("--cotrain-steps", type=_int_at_least(0), default=2000,
                   help="co-training steps")
    p.add_argument("--preset", default="light", help="network preset: light (CPU), paper (GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=_int_at_least(1), default=2)
    p.add_argument("--crop", type=_int_at_least(32), default=96,
                   help="training crop side (voxels, >= 32)")
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--ema-alpha", type=_positive_float, default=None,
                   help="teacher EMA rate per step; with the ramp schedule its floor "
                        "(default 0.01)")
    p.add_argument("--ema-schedule", choices=["ramp", "constant"], default=None,
                   help="ramp (default): rate max(1/(t+1), alpha), the teacher follows early; "
                        "constant: alpha every step (the paper)")
    p.add_argument("--unlabeled-weight", type=float, default=1.0, help="w of the consistency loss")
    p.add_argument("--unlabeled-rampup", type=_int_at_least(0), default=None,
                   help="co-training steps over which w ramps up from ~0 (default 100; 0: none)")
    p.add_argument("--no-auto-thresholds", dest="auto_thresholds", action="store_false",
                   help="keep the model's thresholds instead of choosing per-class ones on the "
                        "labelled tomograms after training")
    p.add_argument("--checkpoint-every", type=_int_at_least(1), default=200)
    p.add_argument("--seed", type=int, default=0)
    _add_source_options(p)
    p.add_argument("--resume", action="store_true", help="continue from the model directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model already in --out (default: refuse)")
    p.add_argument("--init-from", default=None,
                   help="fine-tune: start from this model's weights (same classes and preset)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="pick particles with a trained model")
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

    p = sub.add_parser("evaluate", help="score picks against reference picks")
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

    p = sub.add_parser("convert", help="convert picks between CSV, STAR, .coords and copick")
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

    p = sub.add_parser("match", help="pick by template matching: no model, labels optional")
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

    p = sub.add_parser("demo", help="simulate, train, pick and score; napari if a display")
    p.add_argument("--out", default="semietpicker-demo", help="working folder")
    p.add_argument("--headless", action="store_true", help="never open napari")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semietpicker`` console script.

    Every failure ends with one line, ``semietpicker <command>: error: <file>: <problem>``,
    and exit code 2 (``-v`` shows the traceback); Ctrl-C at any time exits with 130.
    """
    command = "semietpicker"
    try:
        from . import distributed
        from .compute import use_available_cores

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


if __name__ == "__main__":
    sys.exit(main())

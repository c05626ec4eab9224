"""``semietpicker train``: a model from labelled (and unlabelled) tomograms."""

from __future__ import annotations

import argparse
import signal
import sys

from ._args import _add_source_options, _int_at_least, _positive_float, _share, _sources, log

MODES = {  # ablation switches of the paper's Table 3
    "supervised": dict(cotrain=False),
    "mean-teacher": dict(cotrain=True, multi_view=False, dropblock=False),
    "multi-view": dict(cotrain=True, multi_view=True, dropblock=False),
    "full": dict(cotrain=True, multi_view=True, dropblock=True),
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``train``'s options; it runs :func:`cmd_train`."""
    p = subparsers.add_parser("train", help="train a model on labelled (and unlabelled) tomograms")
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
    p.add_argument("--steps", type=_int_at_least(1), default=None,
                   help="burn-in (supervised) steps (default 4000: on the czii-20A quality "
                        "benchmark 4000 beat 2000 in both seeds tried, README)")
    p.add_argument("--cotrain-steps", type=_int_at_least(0), default=2000,
                   help="co-training steps")
    p.add_argument("--preset", default="light",
                   help="network preset: light (CPU), medium (long CPU runs), paper (GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=_int_at_least(1), default=2)
    p.add_argument("--crop", type=_int_at_least(32), default=None,
                   help="training crop side (voxels, >= 32; default 64 on a CPU, 96 on a GPU)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate (default 1e-3; 1e-4 with --init-from: a fine-tune "
                        "at the full rate moves the model further than new labels steer it; "
                        "with --resume the model's own)")
    p.add_argument("--ema-alpha", type=_positive_float, default=None,
                   help="teacher EMA rate per step; with the ramp schedule its floor "
                        "(default 0.01)")
    p.add_argument("--ema-schedule", choices=["ramp", "constant"], default=None,
                   help="ramp (default): rate max(1/(t+1), alpha), the teacher follows early; "
                        "constant: alpha every step (the paper)")
    p.add_argument("--pseudo-labels", choices=["soft", "peaks"], default=None,
                   help="soft (default): the teacher's averaged heatmaps (the paper); peaks: "
                        "its confident peaks redrawn as label Gaussians, unsure ones left out")
    p.add_argument("--unlabeled-weight", type=float, default=None,
                   help="w of the consistency loss (default 1; 0: the EMA teacher without "
                        "pseudo-labels)")
    p.add_argument("--unlabeled-rampup", type=_int_at_least(0), default=None,
                   help="co-training steps over which w ramps up from ~0 (default 100; 0: none)")
    p.add_argument("--lam", type=_positive_float, default=None,
                   help="the heatmap loss's weight on background voxels, that is on hard "
                        "negatives, after --lam-warmup steps (default 64; before them the "
                        "paper's 4)")
    p.add_argument("--lam-warmup", type=_int_at_least(0), default=None,
                   help="steps trained with the paper's lambda of 4 before --lam applies "
                        "(default 1000: a large weight early keeps the peaks from forming)")
    p.add_argument("--average-last", type=_share, default=None,
                   help="supervised training: also average the weights over this last part "
                        "of the steps and save the average if it scores higher on the "
                        "labelled tomograms (default 1/3; 0: off)")
    p.add_argument("--no-auto-thresholds", dest="auto_thresholds", action="store_false",
                   help="keep the model's thresholds instead of choosing per-class ones on the "
                        "labelled tomograms after training")
    p.add_argument("--checkpoint-every", type=_int_at_least(1), default=200)
    p.add_argument("--seed", type=int, default=0)
    _add_source_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the model directory, with the model's own loss and "
                        "optimiser settings where they are not given")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model already in --out (default: refuse)")
    p.add_argument("--init-from", default=None,
                   help="fine-tune: start from this model's weights (same classes and preset)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..classes import load_classes
    from ..model.checkpoint import load_card, model_exists
    from ..pipeline import TrainingSet, train
    from ..training.config import TrainConfig, default_crop, learning_rate, setting

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
        from ..io.copick_io import open_project, read_copick_picks

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
    continued = load_card(args.out) if args.resume and model_exists(args.out) else None
    cotrain_steps = args.cotrain_steps if mode["cotrain"] else 0
    if cotrain_steps and not unlabelled:
        log.warning("no --unlabeled tomograms: training supervised only")
    config = TrainConfig(
        steps=setting("steps", args.steps), cotrain_steps=cotrain_steps,
        batch_size=args.batch_size,
        crop=args.crop or default_crop(args.device), preset=args.preset, seed=args.seed,
        device=args.device, checkpoint_every=args.checkpoint_every,
        multi_view=mode.get("multi_view", True), dropblock=mode.get("dropblock", True),
        auto_thresholds=args.auto_thresholds,
        # unset: a continued model's own, else TrainConfig's default (training.config.setting)
        **{name: setting(name, value, continued) for name, value in (
            ("ema_alpha", args.ema_alpha), ("ema_schedule", args.ema_schedule),
            ("pseudo_labels", args.pseudo_labels), ("average_last", args.average_last),
            ("lam", args.lam), ("lam_warmup", args.lam_warmup),
            ("unlabelled_weight", args.unlabeled_weight),
            ("unlabelled_rampup", args.unlabeled_rampup))},
        lr=learning_rate(args.lr, fine_tune=bool(args.init_from), continued=continued))
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



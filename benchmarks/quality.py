"""Picking quality at realistic density and noise: template matching vs supervised vs
SemiETPicker, every setting with thresholds chosen on the labelled tomograms only.

Data: tomograms simulated as they are acquired, at 10 A (``--acquired-voxel-size``, the
CZII voxel size; 184 x 630 x 630 for ``czii-20A``) at the real CZII particle density
(``--density 1``), noise through the missing wedge, for each SNR of ``--snrs`` (per 10 A
voxel, the simulator's definition); then mean-binned to the model's 20 A (``--voxel-size``)
by the pipeline's ``open_tomogram(path, level)``, as ``semietpicker train --bin 2`` does.
Binning 2x averages 8 voxels of noise, so the binned SNR is several times the acquired one:
simulating at 20 A directly with the same SNR is far harder than real binned data.
The first ``--labelled`` are labelled, the next ``--unlabelled`` unlabelled, the rest
test; only test tomograms are scored. Settings:

- template matching: NCC over ``--rotations`` orientations with the class templates,
  per-class thresholds tuned (F-beta4, cross-validated) on the labelled tomograms;
- supervised: ``--burn-in + --cotrain`` supervised steps;
- full SemiETPicker: ``--burn-in`` steps, then ``--cotrain`` co-training steps (equal total
  steps; EMA ramp and consistency ramp-up, the defaults); both models choose their
  thresholds on the labelled tomograms at the end of training (the default);
- ``--pseudo-labels soft peaks``: a SemiETPicker row per kind of pseudo-label (the
  paper's averaged teacher heatmaps; the teacher's confident peaks drawn as Gaussians);
- ``--unlabelled-weight 0``: SemiETPicker's EMA teacher without pseudo-labels (its
  student is then the supervised model): what the teacher's averaging alone is worth;
- both models a run chooses between, each with the thresholds training chose for it on
  the labelled tomograms: SemiETPicker's teacher and student, supervised training's weight
  average over its last ``--average-last`` steps and its last weights; the setting's own
  row is the one training saved (the higher on the labelled tomograms);
- ``--labels template-matching``: the labelled tomograms' labels are template matching's
  picks at its label-free thresholds (no hand-placed pick), against template matching
  alone with those thresholds (start without clicking).

``--settings`` chooses the rows; ``--summarise OUT...`` prints one table of runs made apart
(each writes ``OUT/rows.csv``), e.g. one process per seed.

Printed: per run per-class F1 at 0.5 x radius, mean F1 and the CZII score; then per
setting each as mean +- standard deviation over seeds, and the command line.

    python benchmarks/quality.py                                  # reduced, this CPU
    python benchmarks/quality.py --setting czii-20A --burn-in 2000 --cotrain 2000 \\
        --labelled 2 --unlabelled 3 --test 2 --seeds 0 1 2        # the issue's setting
"""

from __future__ import annotations

import argparse
import copy
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from ablation import print_per_run, score_model, score_picks

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.inference.predict import PeakCache
from napari_semietpicker.inference.template_matching import MatchConfig, match_tomogram
from napari_semietpicker.inference.thresholds import choose_thresholds
from napari_semietpicker.io.picks import read_picks_csv
from napari_semietpicker.model.checkpoint import load_card, load_trainer_state, save_model
from napari_semietpicker.pipeline import open_tomogram
from napari_semietpicker.simulate import simulate_dataset
from napari_semietpicker.training.config import TrainConfig, TrainProgress
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer
from napari_semietpicker.training.semi import PSEUDO_LABELS

#: (z, y, x) shape at the model's 20 A: the whole CZII tomogram (184 x 630 x 630 at 10 A)
#: binned 2x, or a quarter of its area for a CPU budget.
SETTINGS = {"czii-20A": (92, 315, 315), "reduced": (46, 160, 160)}
#: The rows ``--settings`` can choose.
SETTING_NAMES = ("template", "supervised", "SemiETPicker")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="quality-run")
    p.add_argument("--setting", choices=list(SETTINGS), default="reduced")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="overrides --setting")
    p.add_argument("--voxel-size", type=float, default=20.0, help="the model's voxel size")
    p.add_argument("--acquired-voxel-size", type=float, default=10.0,
                   help="simulated at this voxel size, then binned to --voxel-size")
    p.add_argument("--density", type=float, default=1.0, help="x the CZII particle density")
    p.add_argument("--snrs", type=float, nargs="+", default=[0.05])
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--unlabelled", type=int, default=2)
    p.add_argument("--test", type=int, default=2)
    p.add_argument("--data-seed", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--burn-in", type=int, default=200)
    p.add_argument("--cotrain", type=int, default=100)
    p.add_argument("--preset", default="light")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rotations", type=int, default=8, help="template matching orientations")
    p.add_argument("--device", default="auto")
    p.add_argument("--settings", nargs="+", default=list(SETTING_NAMES), choices=SETTING_NAMES)
    p.add_argument("--labels", choices=["hand", "template-matching"], default="hand",
                   help="labels of the labelled tomograms: the true picks, or template "
                   "matching's picks at its label-free thresholds (no hand-placed pick)")
    p.add_argument("--summarise", nargs="+", metavar="OUT",
                   help="print one table of earlier runs' rows.csv and stop")
    p.add_argument("--reuse-data", action="store_true",
                   help="use the tomograms already simulated in --out (same arguments)")
    p.add_argument("--pseudo-labels", nargs="+", choices=PSEUDO_LABELS, default=["soft"],
                   help="SemiETPicker's pseudo-labels, a row each (see training.semi)")
    p.add_argument("--unlabelled-weight", type=float, default=1.0,
                   help="SemiETPicker's consistency weight; 0: its EMA teacher without "
                        "pseudo-labels, a weight average of supervised training")
    p.add_argument("--average-last", type=float, default=TrainConfig.average_last,
                   help="supervised: the fraction of steps its weights are averaged over "
                        "(0: no average; see TrainConfig)")
    p.add_argument("--lam", type=float, default=TrainConfig.lam,
                   help="the loss's weight on background voxels after --lam-warmup steps")
    p.add_argument("--lam-warmup", type=int, default=TrainConfig.lam_warmup,
                   help="steps at the paper's lambda (4) before --lam applies")
    p.add_argument("--balanced-classes", action="store_true",
                   help="positive crops centred on a class drawn uniformly, then its pick")
    return p.parse_args()


def binning_level(acquired: float, model: float) -> int:
    """How many 2x binnings take the acquired voxel size to the model's (a whole number)."""
    level = round(math.log2(model / acquired))
    if level < 0 or not math.isclose(acquired * 2**level, model, rel_tol=1e-3):
        raise SystemExit(f"--voxel-size {model:g} must be --acquired-voxel-size {acquired:g} "
                         "times a power of two")
    return level


def template_matching_candidates(tomograms, classes, rotations: int, cache: Path
                                 ) -> pd.DataFrame:
    """Template matching's scored candidates on ``tomograms``, with the label-free
    threshold of each tomogram and class (``noise_threshold``). Kept in ``cache`` (a CSV):
    the same data and rotations reuse them."""
    if cache.exists():
        candidates = pd.read_csv(cache)
        if "noise_threshold" in candidates and \
                set(candidates["experiment"]) >= {t.name for t in tomograms}:
            return candidates
    config = MatchConfig(rotations=rotations)
    tables = []
    for tomogram in tomograms:
        result = match_tomogram(tomogram, classes, config)
        table = result.peaks.picks
        table["noise_threshold"] = table["particle_type"].map(result.noise_thresholds)
        tables.append(table)
    candidates = pd.concat(tables, ignore_index=True)
    candidates.to_csv(cache, index=False)
    return candidates


def template_matching_row(candidates: pd.DataFrame, labelled_names, test_names, picks,
                          classes) -> dict:
    """Template matching's scores on the test tomograms, thresholds tuned on the labelled
    ones."""
    thresholds = choose_thresholds(candidates[candidates["experiment"].isin(labelled_names)],
                                   picks[picks["experiment"].isin(labelled_names)], classes)
    found = PeakCache("test", candidates[candidates["experiment"].isin(test_names)]
                      ).at(thresholds)
    return score_picks(found, picks[picks["experiment"].isin(test_names)], classes)


def label_free_picks(candidates: pd.DataFrame, names) -> pd.DataFrame:
    """Template-matching picks of tomograms ``names`` at the label-free thresholds (one
    expected noise peak per tomogram and class): what a user without any labels has."""
    rows = candidates[candidates["experiment"].isin(names)]
    return rows[rows["score"] >= rows["noise_threshold"]].reset_index(drop=True)


def print_progress(seed: int, every: int = 500) -> Callable[[TrainProgress], None]:
    """A progress report every ``every`` steps (hour-long runs otherwise print nothing)."""
    def report(progress: TrainProgress) -> None:
        if progress.step % every == 0:
            print(f"  seed {seed} {progress.phase} step {progress.step}/{progress.total_steps}: "
                  f"loss {progress.loss:.4f}, {progress.elapsed_s:.0f} s, "
                  f"{progress.eta_s:.0f} s to go", flush=True)
    return report


def burn_done(burn_dir: Path) -> int | None:
    """Steps a burn-in kept in ``burn_dir`` has trained (None: there is none)."""
    state = load_trainer_state(burn_dir)
    return None if state is None else int(state["step"])


def save_candidates(trainer: Trainer, run_dir: Path) -> dict[str, Path]:
    """The two models a run chose between (its weight average: co-training's teacher or a
    supervised run's average; and the student) saved apart, each with the thresholds
    training chose for it on the labelled tomograms, so that both can be scored on the
    test tomograms; ``{}`` where training kept no average."""
    history = trainer.card.history
    if trainer.teacher is None or "labelled_thresholds" not in history:
        return {}
    dirs = {}
    for name, model in ((trainer.average_name, trainer.teacher), ("student", trainer.student)):
        card = copy.deepcopy(trainer.card)
        card.thresholds = history["labelled_thresholds"][name]
        dirs[name] = Path(f"{run_dir}-{name}")
        save_model(dirs[name], model, card)
    return dirs


def main() -> None:
    args = parse_args()
    if args.summarise:  # runs made apart (e.g. one process per seed): one table
        table = pd.concat([pd.read_csv(Path(d) / "rows.csv") for d in args.summarise],
                          ignore_index=True)
        print_summary(print_per_run(table.to_dict("records")))
        print("command: python " + shlex.join(sys.argv))
        return
    if "SemiETPicker" in args.settings and not args.cotrain:
        raise SystemExit("SemiETPicker needs co-training steps (--cotrain > 0)")
    out = Path(args.out)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    shape = tuple(args.shape) if args.shape else SETTINGS[args.setting]
    level = binning_level(args.acquired_voxel_size, args.voxel_size)
    n = args.labelled + args.unlabelled + args.test
    start = time.perf_counter()
    rows = []
    for snr in args.snrs:
        data = out / f"snr{snr:g}"
        if args.reuse_data and (data / "data" / "picks.csv").exists():
            picks = read_picks_csv(data / "data" / "picks.csv")
        else:
            picks = simulate_dataset(data / "data", n=n, shape=[s * 2**level for s in shape],
                                     voxel_size=args.acquired_voxel_size, snr=snr,
                                     seed=args.data_seed, classes=classes,
                                     density=args.density)
        tomograms = [open_tomogram(p, level)
                     for p in sorted((data / "data" / "tomograms").glob("*.mrc"))]
        labelled_t = tomograms[:args.labelled]
        unlabelled_t = tomograms[args.labelled:args.labelled + args.unlabelled]
        test_t = tomograms[args.labelled + args.unlabelled:]
        truth = picks[picks["experiment"].isin([t.name for t in test_t])]
        print(f"SNR {snr:g}: {n} tomograms simulated at {args.acquired_voxel_size:g} A, "
              f"binned to {args.voxel_size:g} A {tomograms[0].shape}, density "
              f"{args.density:g}x CZII; labelled {args.labelled} "
              f"({int(picks['experiment'].isin([t.name for t in labelled_t]).sum())} particles), "
              f"unlabelled {args.unlabelled}, test {args.test} ({len(truth)} particles); "
              f"device {device}; burn-in {args.burn_in} + co-training {args.cotrain} steps vs "
              f"{args.burn_in + args.cotrain} supervised, preset {args.preset}, crop "
              f"{args.crop}, batch {args.batch_size}, class-balanced crops "
              f"{args.balanced_classes}, lambda {args.lam:g} from step {args.lam_warmup}, "
              f"labels {args.labels}", flush=True)
        labelled_names, test_names = [t.name for t in labelled_t], [t.name for t in test_t]
        labels = picks
        if "template" in args.settings or args.labels == "template-matching":
            t = time.perf_counter()
            candidates = template_matching_candidates(
                [*labelled_t, *test_t], classes, args.rotations,
                data / f"template-matching-{args.rotations}.csv")
            row = template_matching_row(candidates, labelled_names, test_names, picks, classes)
            rows.append({"snr": snr, "setting": "template matching", "seed": "-", **row})
            print(f"  template matching ({args.rotations} rotations, "
                  f"{time.perf_counter() - t:.0f} s): F1@0.5 {row['F1@0.5']:.3f}  CZII "
                  f"{row['CZII']:.3f}", flush=True)
            free = label_free_picks(candidates, test_names)
            row = score_picks(free, truth, classes)
            rows.append({"snr": snr, "setting": "template matching, label-free thresholds",
                         "seed": "-", **row})
            print(f"  template matching, label-free thresholds: F1@0.5 {row['F1@0.5']:.3f}  "
                  f"CZII {row['CZII']:.3f}", flush=True)
            if args.labels == "template-matching":
                labels = label_free_picks(candidates, labelled_names)
                print(f"  labels: {len(labels)} template-matching picks on the labelled "
                      f"tomograms, no hand-placed pick", flush=True)
        labelled = [prepare_volume(t, labels, classes) for t in labelled_t]
        unlabelled = [prepare_volume(t) for t in unlabelled_t]
        learned = [s for s in ("supervised", "SemiETPicker") if s in args.settings]
        for seed in args.seeds if learned else []:
            base = TrainConfig(steps=args.burn_in, cotrain_steps=args.cotrain,
                               preset=args.preset, crop=args.crop, batch_size=args.batch_size,
                               seed=seed, device=args.device, checkpoint_every=10**9,
                               balanced_classes=args.balanced_classes, lam=args.lam,
                               lam_warmup=args.lam_warmup)
            burn_dir = data / f"seed{seed}" / "burn-in"
            done = burn_done(burn_dir)  # with --reuse-data, a kept burn-in is gone on from
            reuse = args.reuse_data and done is not None and done <= args.burn_in
            burn = Trainer(base, classes, labelled, burn_dir, unlabelled, resume=reuse)
            t = time.perf_counter()
            burn.run(print_progress(seed),
                     should_stop=lambda burn=burn: burn.step >= args.burn_in)
            print(f"  seed {seed} burn-in of {args.burn_in} steps: "
                  f"{time.perf_counter() - t:.0f} s{' (reused)' if reuse else ''}", flush=True)
            runs = [(s, p) for s in learned
                    for p in (args.pseudo_labels if s == "SemiETPicker" else [None])]
            for setting, pseudo in runs:
                name = setting if pseudo in (None, "soft") else f"{setting}, {pseudo}"
                if setting == "SemiETPicker" and args.unlabelled_weight != 1.0:
                    name += f", w {args.unlabelled_weight:g}"
                run_dir = data / f"seed{seed}" / name.replace(", ", "-").replace(" ", "")
                shutil.rmtree(run_dir, ignore_errors=True)
                shutil.copytree(burn_dir, run_dir)
                t = time.perf_counter()
                trainer = burn  # (supervised with --cotrain 0: the burn-in is the whole run)
                if setting == "supervised" and args.cotrain:
                    config = TrainConfig(**{**vars(base), "steps": args.burn_in + args.cotrain,
                                            "cotrain_steps": 0,
                                            "average_last": args.average_last})
                    trainer = Trainer(config, classes, labelled, run_dir, resume=True)
                    trainer.run(print_progress(seed))
                elif setting == "SemiETPicker":
                    config = TrainConfig(**{**vars(base), "pseudo_labels": pseudo,
                                            "unlabelled_weight": args.unlabelled_weight})
                    trainer = Trainer(config, classes, labelled, run_dir, unlabelled,
                                      resume=True)
                    trainer.run(print_progress(seed))
                trained_s = time.perf_counter() - t
                candidates = save_candidates(trainer, run_dir)
                saved = trainer.card.history.get("saved_model")
                models = [(f"{name} {model}", model_dir) for model, model_dir in
                          candidates.items()] or [(name, run_dir)]
                for label, model_dir in models:
                    row = score_model(model_dir, test_t, truth, classes, None, device)
                    rows.append({"snr": snr, "setting": label, "seed": seed, **row})
                    if label == f"{name} {saved}":  # the saved model's row too
                        rows.append({"snr": snr, "setting": name, "seed": seed, **row})
                    print(f"  seed {seed} {label:20} trained in {trained_s:4.0f} s after the "
                          f"shared burn-in: F1@0.5 {row['F1@0.5']:.3f}  CZII "
                          f"{row['CZII']:.3f}; thresholds " + ", ".join(
                              f"{v:.2f}" for v in load_card(model_dir).thresholds.values())
                          + (" (the saved model)" if label == f"{name} {saved}" else ""),
                          flush=True)
    table = print_per_run(rows)
    table.to_csv(out / "rows.csv", index=False)
    print_summary(table)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    print("command: python " + shlex.join(sys.argv))


def print_summary(table: pd.DataFrame) -> None:
    """Per setting: each metric as mean +- standard deviation over seeds."""
    metrics = [c for c in table.columns if c not in ("snr", "setting", "seed")]
    grouped = table.groupby(["snr", "setting"], sort=False)[metrics]
    mean, std = grouped.mean(), grouped.std().fillna(0.0)
    summary = mean.map(lambda v: f"{v:.3f}") + "+-" + std.map(lambda v: f"{v:.3f}")
    seeds = sorted({str(s) for s in table["seed"]} - {"-"})
    print(f"\nmean +- standard deviation over seeds {', '.join(seeds)} "
          "(template matching: one run; "
          "per-class columns: F1 at 0.5 x radius):")
    print(summary.to_string())


if __name__ == "__main__":
    main()

"""The paper's Table 3 on simulated data: supervised vs Mean Teacher vs +multi-view vs +DropBlock.

Per seed, one burn-in on the labelled tomograms is shared by all four settings, which
then run the same number of further steps (supervised: more supervised steps), so they
differ only in the semi-supervised parts. Each model picks the test tomograms; F1 at
0.5 r and 0.75 r per class, their mean over classes, and the CZII score are printed,
then the mean and spread over seeds.

Reduced setting (this 2-core CPU, under an hour):
    python benchmarks/ablation.py
Full setting (a GPU):
    python benchmarks/ablation.py --shape 128 320 320 --burn-in 3000 --cotrain 3000 \
        --preset paper --crop 96 --batch-size 4 --unlabelled 16 --test 8 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

from napari_semietpicker.classes import load_classes
from napari_semietpicker.cli import MODES
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.inference.predict import PredictConfig, pick_tomogram
from napari_semietpicker.io.tomogram import read_tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import load_model
from napari_semietpicker.simulate import simulate_dataset
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="ablation-run")
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--unlabelled", type=int, default=8)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=(64, 192, 192))
    p.add_argument("--density", type=float, default=3.0, help="x the CZII particle density")
    p.add_argument("--data-seed", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--burn-in", type=int, default=400)
    p.add_argument("--cotrain", type=int, default=200)
    p.add_argument("--preset", default="light")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--ema-alpha", type=float, default=0.01)
    p.add_argument("--drop-rate", type=float, default=0.1, help="DropBlock fraction (full mode)")
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--device", default="auto")
    p.add_argument("--modes", nargs="+", default=list(MODES))
    return p.parse_args()


def score_model(model_dir: Path, tomograms, truth: pd.DataFrame, classes,
                threshold: float | None, device, precision: str = "auto") -> dict:
    """Per-class F1@0.5r, mean F1 and CZII score on ``tomograms``; ``threshold`` None uses
    the model's own per-class thresholds."""
    model, card = load_model(model_dir, device)
    limit = card.class_thresholds() if threshold is None else threshold
    config = PredictConfig(precision=precision)
    tables = [pick_tomogram(model, card, t, config, device)[0].at(limit) for t in tomograms]
    return score_picks(pd.concat(tables, ignore_index=True), truth, classes)


def score_picks(picks: pd.DataFrame, truth: pd.DataFrame, classes) -> dict:
    """Per-class F1@0.5r, mean F1 and CZII score of a picks table."""
    result = evaluate(picks, truth, classes)
    row = {f"{c}": f for c, f in zip(result.per_class["particle_type"],
                                      result.per_class["f1_0.5"])}
    row.update({"F1@0.5": result.mean_f1[0.5], "F1@0.75": result.mean_f1[0.75],
                "CZII": result.score})
    return row


def print_per_run(rows: list[dict]) -> pd.DataFrame:
    """Print one line per trained model (per-class F1 and the summary scores)."""
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print("\nper run (per-class columns: F1 at 0.5 x radius):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    n = args.labelled + args.unlabelled + args.test
    start = time.perf_counter()
    picks = simulate_dataset(out / "data", n=n, shape=tuple(args.shape), seed=args.data_seed,
                             classes=classes, density=args.density)
    tomograms = [read_tomogram(p) for p in sorted((out / "data" / "tomograms").glob("*.mrc"))]
    labelled_t = tomograms[:args.labelled]
    unlabelled_t = tomograms[args.labelled:args.labelled + args.unlabelled]
    test_t = tomograms[args.labelled + args.unlabelled:]
    truth = picks[picks["experiment"].isin([t.name for t in test_t])]
    labelled = [prepare_volume(t, picks, classes) for t in labelled_t]
    unlabelled = [prepare_volume(t) for t in unlabelled_t]
    print(f"data: {n} simulated tomograms {tuple(args.shape)} ({time.perf_counter() - start:.0f}"
          f" s); labelled {args.labelled}, unlabelled {args.unlabelled}, test {args.test} "
          f"({len(truth)} particles); device {device}; burn-in {args.burn_in} + "
          f"{args.cotrain} steps, preset {args.preset}, crop {args.crop}, batch "
          f"{args.batch_size}, EMA alpha {args.ema_alpha}, DropBlock {args.drop_rate}, "
          f"threshold {args.threshold}",
          flush=True)
    rows = []
    for seed in args.seeds:
        base = TrainConfig(steps=args.burn_in, cotrain_steps=args.cotrain, preset=args.preset,
                           crop=args.crop, batch_size=args.batch_size, seed=seed,
                           device=args.device, ema_alpha=args.ema_alpha,
                           drop_rate=args.drop_rate, checkpoint_every=10**9)
        burn_dir = out / f"seed{seed}" / "burn-in"
        burn = Trainer(base, classes, labelled, burn_dir, unlabelled)
        burn.run(should_stop=lambda burn=burn: burn.step >= args.burn_in)
        for mode in args.modes:
            switches = MODES[mode]
            run_dir = out / f"seed{seed}" / mode
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(burn_dir, run_dir)
            if switches["cotrain"]:
                config = TrainConfig(**{**vars(base), "multi_view": switches["multi_view"],
                                        "dropblock": switches["dropblock"]})
                trainer = Trainer(config, classes, labelled, run_dir, unlabelled, resume=True)
            else:
                config = TrainConfig(**{**vars(base), "steps": args.burn_in + args.cotrain,
                                        "cotrain_steps": 0})
                trainer = Trainer(config, classes, labelled, run_dir, resume=True)
            t = time.perf_counter()
            trainer.run()
            row = {"mode": mode, "seed": seed,
                   **score_model(run_dir, test_t, truth, classes, args.threshold, device)}
            rows.append(row)
            print(f"seed {seed} {mode:13} trained in {time.perf_counter() - t:5.0f} s: "
                  f"F1@0.5 {row['F1@0.5']:.3f}  F1@0.75 {row['F1@0.75']:.3f}  "
                  f"CZII {row['CZII']:.3f}", flush=True)
    table = print_per_run(rows)
    summary = table.groupby("mode", sort=False)[["F1@0.5", "F1@0.75", "CZII"]].agg(["mean", "std"])
    print(f"\nmean and standard deviation over seeds {args.seeds}:")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

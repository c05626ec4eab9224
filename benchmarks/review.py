"""A simulated annotator: what K review answers buy, by the order the picks are shown in.

Per seed, a model is trained on the labelled tomograms and picks a pool of unlabelled ones
(with test-time flips, so the queue sees the flip views' spread). The pool's candidates are
put in one order across tomograms: ``ranked`` (the review queue, most uncertain first),
``random``, or ``score`` (most confident first, as a person scrolling by score would). An
oracle answers the first K items from the ground truth (accept; move when off by more than
a quarter radius; change class when another class's particle is there; else reject). The
pool's labels are then all its picks at the thresholds with the answers applied
(``--pool-labels all``, the default, as the review dock's "use as labels" does: unreviewed
picks count as positives and unpicked places as background), or the answers alone
(``answers``: accepted, moved and re-classed picks positives, rejected ones hard negatives,
each labelling only its own neighbourhood, the rest of the pool unknown to the loss). The
model is fine-tuned on the labelled tomograms plus the pool for a few steps. Every model is
scored on held-out test tomograms: CZII F-beta4 and F1 at 0.5 x radius per class. ``K = 0``
is the fine-tune without answers (with ``all`` on the unreviewed picks, with ``answers`` on
the labelled tomograms alone): the gain of fine-tuning itself, to tell apart from the gain of
the answers. CPU time is per round (fine-tune and scoring).

    python benchmarks/review.py                        # this 2-core CPU, ~20 minutes
    python benchmarks/review.py --budgets 2 --seeds 0 --steps 20 --finetune 10 \
        --shape 64 96 96 --test 1 --pool 1             # a smoke run, a minute
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ablation import print_per_run
from scipy.spatial import cKDTree

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.inference.predict import PeakCache, PredictConfig, pick_tomogram
from napari_semietpicker.inference.review import (
    ACCEPT,
    CHANGE_CLASS,
    MOVE,
    REJECT,
    Review,
    build_queue,
    labels_after_review,
)
from napari_semietpicker.io.picks import positions_A
from napari_semietpicker.io.tomogram import read_tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import load_model
from napari_semietpicker.simulate import simulate_dataset
from napari_semietpicker.training.config import FINE_TUNE_LR, TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

ORDERS = ("ranked", "random", "score")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="review-run")
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--pool", type=int, default=2, help="unlabelled tomograms to review")
    p.add_argument("--test", type=int, default=3)
    p.add_argument("--shape", type=int, nargs=3, default=(64, 192, 192))
    p.add_argument("--density", type=float, default=3.0, help="x the CZII particle density")
    p.add_argument("--data-seed", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--base-seed", type=int, default=None,
                   help="one first model (trained with this seed) for all seeds, which then "
                        "vary the fine-tuning and the random order only (saves time)")
    p.add_argument("--steps", type=int, default=400, help="training steps of the first model")
    p.add_argument("--finetune", type=int, default=150, help="fine-tuning steps per round")
    p.add_argument("--finetune-lr", type=float, default=FINE_TUNE_LR,
                   help="fine-tuning learning rate (default: the one train --init-from uses)")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    p.add_argument("--preset", default="light")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--pool-labels", choices=["answers", "all"], default="all",
                   help="the pool's labels in fine-tuning: the answers alone, each labelling "
                   "only its neighbourhood (partial volumes), or all shown picks with the "
                   "answers applied (unreviewed picks as positives)")
    return p.parse_args()


def oracle(item: pd.Series, truth: pd.DataFrame, radius: dict[str, float]
           ) -> tuple[str, str, np.ndarray]:
    """The ground truth's answer for one queue item: (action, class, position)."""
    zyx = item[["z", "y", "x"]].to_numpy(float)
    best = None
    for name, group in truth.groupby("particle_type"):
        distance, row = cKDTree(positions_A(group)).query(zyx)
        if distance <= 0.5 * radius[name] and (best is None or distance < best[0]):
            best = (distance, name, positions_A(group)[row])
    if best is None:
        return REJECT, item["particle_type"], zyx
    distance, name, where = best
    if name != item["particle_type"]:
        return CHANGE_CLASS, name, where
    return (ACCEPT, name, zyx) if distance <= 0.25 * radius[name] else (MOVE, name, where)


def ordered_items(reviews: dict[str, Review], order: str, seed: int) -> list[tuple[str, int]]:
    """All queue items of the pool, (tomogram, index), in the order they are shown."""
    rows = [(name, i, float(r.queue["priority"].iloc[i]), float(r.queue["score"].iloc[i]))
            for name, r in reviews.items() for i in range(len(r.queue))]
    if order == "ranked":
        rows.sort(key=lambda row: (-row[2], -row[3]))
    elif order == "score":
        rows.sort(key=lambda row: -row[3])
    else:
        rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    return [(name, i) for name, i, _, _ in rows]


def score(model_dir: Path, tomograms, truth: pd.DataFrame, classes, device) -> dict:
    """CZII F-beta4, mean F1 and F1 per class at 0.5 x radius, at the model's thresholds."""
    model, card = load_model(model_dir, device)
    picks = [pick_tomogram(model, card, t, PredictConfig(), device)[0]
             .at(card.class_thresholds()) for t in tomograms]
    result = evaluate(pd.concat(picks, ignore_index=True), truth, classes)
    row = dict(zip(result.per_class["particle_type"], result.per_class["f1_0.5"]))
    return {**row, "F1@0.5": result.mean_f1[0.5], "CZII": result.score}


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    radius = {c.name: c.radius_A for c in classes}
    start = time.perf_counter()
    n = args.labelled + args.pool + args.test
    truth = simulate_dataset(out / "data", n=n, shape=tuple(args.shape), seed=args.data_seed,
                             classes=classes, density=args.density)
    tomograms = [read_tomogram(p) for p in sorted((out / "data" / "tomograms").glob("*.mrc"))]
    labelled_t, pool_t = tomograms[:args.labelled], tomograms[args.labelled:-args.test]
    test_t = tomograms[-args.test:]
    test_truth = truth[truth["experiment"].isin([t.name for t in test_t])]
    labelled = [prepare_volume(t, truth, classes) for t in labelled_t]
    print(f"data: {n} simulated tomograms {tuple(args.shape)}: labelled {args.labelled}, pool "
          f"{args.pool}, test {args.test} ({len(test_truth)} particles); device {device}; "
          f"{args.steps} steps, then {args.finetune} fine-tuning steps per round; preset "
          f"{args.preset}, crop {args.crop}, batch {args.batch_size}; pool labels "
          f"{args.pool_labels}; fine-tuning learning rate {args.finetune_lr:g}",
          flush=True)
    rows = []
    for seed in args.seeds:
        base_seed = seed if args.base_seed is None else args.base_seed
        config = TrainConfig(steps=args.steps, cotrain_steps=0, preset=args.preset,
                             crop=args.crop, batch_size=args.batch_size, seed=base_seed,
                             device=args.device, checkpoint_every=10**9)
        base = out / f"seed{base_seed}" / "base"
        cpu = time.process_time()
        if not (base / "model.safetensors").is_file():  # deterministic: a rerun reuses it
            Trainer(config, classes, labelled, base).run()
        rows.append({"seed": seed, "order": "none", "K": 0, "fine-tuned": False,
                     **score(base, test_t, test_truth, classes, device),
                     "cpu s": time.process_time() - cpu})
        print(f"seed {seed}: first model CZII {rows[-1]['CZII']:.3f}", flush=True)
        model, card = load_model(base, device)
        thresholds = card.class_thresholds()
        peaks, reviews = {}, {}
        cpu = time.process_time()
        for t in pool_t:
            cache, heat = pick_tomogram(model, card, t, PredictConfig(tta=True),
                                        device)
            peaks[t.name] = cache.picks.assign(peak=np.arange(len(cache.picks)))
            reviews[t.name] = Review(build_queue(cache.picks, classes, thresholds, heat,
                                                 cache.heatmap_grid))
        queued = sum(len(r.queue) for r in reviews.values())
        print(f"seed {seed}: {queued} items queued in the pool "
              f"({time.process_time() - cpu:.0f} s CPU with flips)", flush=True)
        tune = TrainConfig(**{**vars(config), "steps": args.finetune, "seed": seed,
                              "lr": args.finetune_lr})
        for order in args.orders:
            items = ordered_items(reviews, order, seed)
            for budget in sorted({0, *args.budgets}):
                if budget == 0 and order != args.orders[0]:
                    continue  # one unreviewed fine-tune per seed
                for review in reviews.values():
                    review.decisions.clear()
                answers = []
                for name, index in items[:budget]:
                    action, particle_type, zyx = oracle(
                        reviews[name].item(index), truth[truth["experiment"] == name], radius)
                    reviews[name].decide(index, action, particle_type, zyx)
                    answers.append(action)
                pool = []
                keep_undecided = args.pool_labels == "all"
                for t in pool_t:
                    if not (keep_undecided or reviews[t.name].decisions):
                        continue  # no answer: nothing known there
                    shown = PeakCache(t.name, peaks[t.name]).at(thresholds)
                    labels = labels_after_review(shown, reviews[t.name], keep_undecided)
                    pool.append(prepare_volume(t, labels, classes, partial=not keep_undecided))
                cpu, wall = time.process_time(), time.perf_counter()
                run_dir = out / f"seed{seed}" / f"{order}-{budget}"
                Trainer(tune, classes, [*labelled, *pool], run_dir, init_from=base).run()
                row = {"seed": seed, "order": order if budget else "none", "K": budget,
                       "fine-tuned": True, **score(run_dir, test_t, test_truth, classes, device),
                       "cpu s": time.process_time() - cpu, "wall s": time.perf_counter() - wall,
                       **{a: answers.count(a) for a in (ACCEPT, MOVE, CHANGE_CLASS, REJECT)}}
                rows.append(row)
                print(f"seed {seed} {row['order']:6} K={budget:3}: CZII {row['CZII']:.3f}, "
                      f"F1@0.5 {row['F1@0.5']:.3f} ({row['cpu s']:.0f} s CPU; answers "
                      f"{', '.join(f'{a} {answers.count(a)}' for a in sorted(set(answers)))})",
                      flush=True)
    table = print_per_run(rows).fillna(0)
    tuned = table[table["fine-tuned"]]
    summary = tuned.groupby(["order", "K"], sort=False)[["CZII", "F1@0.5"]].agg(["mean", "std"])
    print(f"\nmean and standard deviation over seeds {args.seeds}:")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    gains = tuned.pivot_table(index=["seed", "K"], columns="order", values="CZII")
    if {"ranked", "random"} <= set(gains.columns):
        gain = (gains["ranked"] - gains["random"]).dropna()
        print("\nCZII gain of ranked over random order, per seed and K:")
        print(gain.to_string(float_format=lambda v: f"{v:+.3f}"))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

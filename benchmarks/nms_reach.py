"""Peak-finding levers measured on trained models, without training again: the NMS window's
reach, test-time flips, the thresholds' F-beta and an ensemble of the models.

For each model directory of a ``quality.py`` run (``<out>/snr*/seed*/<setting>``), the
labelled and test tomograms are predicted once per flip setting; for each reach (a
fraction of the class radius each way), peaks are found, per-class thresholds chosen on
the labelled tomograms (cross-validated, F-beta4 as training does, or each F-beta of
``--betas``) and the test tomograms scored (mean F1 at 0.5 x radius, CZII F-beta4).

    python benchmarks/nms_reach.py --run quality-run/snr0.05 --labelled 2 --unlabelled 3 \\
        --reaches 0.5 1.0
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd
from ablation import score_picks
from quality import binning_level

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.geometry import Grid
from napari_semietpicker.inference.predict import (
    PEAK_FLOOR,
    PeakCache,
    PredictConfig,
    peaks_from_heatmaps,
    predict_heatmaps,
)
from napari_semietpicker.inference.thresholds import choose_thresholds, labelled_references
from napari_semietpicker.io.picks import read_picks_csv
from napari_semietpicker.io.tomogram import read_tomogram
from napari_semietpicker.metrics import CZII_BETA
from napari_semietpicker.model.checkpoint import ModelCard, load_card, load_model
from napari_semietpicker.pipeline import open_tomogram
from napari_semietpicker.training.data import Volume, prepare_volume


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a quality.py output folder of one SNR")
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--unlabelled", type=int, default=2)
    p.add_argument("--reaches", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--flips", choices=["off", "on", "both"], default="off")
    p.add_argument("--betas", type=float, nargs="+", default=[CZII_BETA],
                   help="choose the labelled tomograms' thresholds for each F-beta (1: F1, "
                   "for users who want precise picks more than complete ones)")
    p.add_argument("--fixed", type=float, nargs="*", default=[0.3],
                   help="also score these thresholds, one for every class")
    p.add_argument("--models", nargs="*", default=None, help="model folders (default: all)")
    p.add_argument("--ensemble", action="store_true",
                   help="also score the mean of all the models' heatmaps (an ensemble)")
    p.add_argument("--device", default="auto")
    return p.parse_args()


def peaks_at(heat: dict, card: ModelCard, volumes: list[Volume], reach: float
             ) -> pd.DataFrame:
    """Scored peaks of ``volumes`` (their heatmaps in ``heat``) with NMS reach ``reach``."""
    return pd.concat([peaks_from_heatmaps(heat[v.name], card, v.name, Grid(v.voxel_size),
                                          volume_shape=v.data.shape, nms_reach=reach).picks
                      for v in volumes], ignore_index=True)


def score_heatmaps(model: str, heat: dict, card: ModelCard, tta: bool,
                   args: argparse.Namespace, labelled: list[Volume], test: list[Volume],
                   classes) -> list[dict]:
    """One model's (or ensemble's) rows: per NMS reach and threshold choice, the test
    tomograms' scores from the heatmaps ``heat`` of the labelled and test tomograms."""
    truth, references = labelled_references(test, classes), labelled_references(labelled, classes)
    rows = []
    for reach in args.reaches:
        candidates = peaks_at(heat, card, test, reach)
        labelled_candidates = peaks_at(heat, card, labelled, reach)
        # thresholds as training chooses them; the oracle's, tuned on the test
        # tomograms themselves, only shows how much the choice leaves on the table
        choices = {
            **{f"labelled, F{beta:g}": choose_thresholds(
                labelled_candidates, references, classes, beta=beta, floor=PEAK_FLOOR,
                runs=[v.name for v in labelled])
               for beta in args.betas},
            "test (oracle)": choose_thresholds(
                candidates, truth, classes, floor=PEAK_FLOOR, runs=[v.name for v in test]),
            **{f"fixed {t:g}": t for t in args.fixed}}
        for tuned_on, thresholds in choices.items():
            found = PeakCache("test", candidates).at(thresholds)
            row = score_picks(found, truth, classes)
            rows.append({"model": model, "flips": tta, "reach": reach,
                         "thresholds on": tuned_on, **row, "picks": len(found)})
            print(f"{model:32} flips {tta!s:5} reach {reach:g}, thresholds on {tuned_on}: "
                  f"F1@0.5 {row['F1@0.5']:.3f}  CZII {row['CZII']:.3f}  ({len(found)} picks, "
                  f"{len(truth)} particles)", flush=True)
    return rows


def main() -> None:
    args = parse_args()
    run = Path(args.run)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    picks = read_picks_csv(run / "data" / "picks.csv")
    models = [Path(m) for m in args.models] if args.models else sorted(
        d for d in run.glob("seed*/*") if (d / "config.json").exists() and d.name != "burn-in")
    paths = sorted((run / "data" / "tomograms").glob("*.mrc"))
    # the tomograms at the models' voxel size, binned as quality.py and train --bin do
    level = binning_level(read_tomogram(paths[0]).voxel_size, load_card(models[0]).voxel_size)
    tomograms = [open_tomogram(p, level) for p in paths]
    labelled = [prepare_volume(t, picks, classes) for t in tomograms[:args.labelled]]
    test = [prepare_volume(t, picks, classes)
            for t in tomograms[args.labelled + args.unlabelled:]]
    flips = {"off": [False], "on": [True], "both": [False, True]}[args.flips]
    rows = []
    ensemble: dict[bool, list[dict]] = {tta: [] for tta in flips}
    for model_dir in models:
        model, card = load_model(model_dir, device)
        for tta in flips:
            config = PredictConfig(tta=tta)
            heat = {v.name: predict_heatmaps(model, v.data, config, device)
                    for v in [*labelled, *test]}
            rows += score_heatmaps(f"{model_dir.parent.name}/{model_dir.name}", heat, card,
                                   tta, args, labelled, test, classes)
            if args.ensemble:
                ensemble[tta].append(heat)
    for tta, heats in ensemble.items():
        if heats:  # the mean of the models' heatmaps, picked as one model's
            mean = {name: sum(h[name] for h in heats) / len(heats) for name in heats[0]}
            rows += score_heatmaps(f"ensemble of {len(heats)}", mean, load_card(models[0]),
                                   tta, args, labelled, test, classes)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = table.groupby(["thresholds on", "flips", "reach"])[["F1@0.5", "CZII"]].agg(
        ["mean", "std"])
    print("\nover models:\n" + summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print("command: python " + shlex.join(sys.argv))


if __name__ == "__main__":
    main()

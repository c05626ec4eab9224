"""Where a trained model's false picks lie: what to fix next, by class.

For each model of a ``quality.py`` run, the test tomograms are picked at the model's own
thresholds and every pick that is not a hit (CZII rule: within half a radius of a particle
of its class, one pick per particle) is put in the first kind that fits:

- ``duplicate``: a second pick within half a radius of a particle of its class (NMS);
- ``off-centre``: within 1.5 radii of a particle of its class, beyond half a radius;
- ``other class``: within the larger radius of a particle of another class (confusion);
- ``elsewhere``: none of these: background noise or an unlabelled distractor particle.

    python benchmarks/false_picks.py --run quality-run/snr0.05 --labelled 2 --unlabelled 3 \\
        --models quality-run/snr0.05/seed0/supervised
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from quality import binning_level
from scipy.spatial import cKDTree

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.inference.predict import PredictConfig, pick_tomogram
from napari_semietpicker.io.picks import positions_A, read_picks_csv
from napari_semietpicker.io.tomogram import read_tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import load_model
from napari_semietpicker.pipeline import open_tomogram

KINDS = ("duplicate", "off-centre", "other class", "elsewhere")


def false_pick_kinds(found: pd.DataFrame, truth: pd.DataFrame, radius: dict[str, float]
                     ) -> dict[str, int]:
    """Counts of the kinds above among one class's picks in one tomogram that are not
    within half a radius of a particle of their class, and of those within (hits and
    duplicates together)."""
    name = str(found["particle_type"].iloc[0])
    zyx = positions_A(found)
    own = truth[truth["particle_type"] == name]
    others = truth[truth["particle_type"] != name]
    own_distance = cKDTree(positions_A(own)).query(zyx)[0] if len(own) else \
        np.full(len(zyx), np.inf)
    near_other = np.zeros(len(zyx), dtype=bool)
    if len(others):
        distance, index = cKDTree(positions_A(others)).query(zyx)
        reach = np.maximum(radius[name], others["particle_type"].map(radius).to_numpy()[index])
        near_other = distance <= reach
    r = radius[name]
    counts = {"within half a radius": int((own_distance <= 0.5 * r).sum())}
    rest = own_distance > 0.5 * r
    off_centre = rest & (own_distance <= 1.5 * r)
    counts["off-centre"] = int(off_centre.sum())
    counts["other class"] = int((rest & ~off_centre & near_other).sum())
    counts["elsewhere"] = int((rest & ~off_centre & ~near_other).sum())
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a quality.py output folder of one SNR")
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--unlabelled", type=int, default=2)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    run = Path(args.run)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    radius = {c.name: c.radius_A for c in classes}
    picks = read_picks_csv(run / "data" / "picks.csv")
    paths = sorted((run / "data" / "tomograms").glob("*.mrc"))[args.labelled + args.unlabelled:]
    pd.set_option("display.width", 250)
    for model_dir in map(Path, args.models):
        model, card = load_model(model_dir, device)
        level = binning_level(read_tomogram(paths[0]).voxel_size, card.voxel_size)
        rows = []
        for path in paths:
            tomogram = open_tomogram(path, level)
            found = pick_tomogram(model, card, tomogram, PredictConfig(), device)[0].at(
                card.class_thresholds())
            truth = picks[picks["experiment"] == tomogram.name]
            per_class = evaluate(found, truth, classes).per_class.set_index("particle_type")
            for name, own in found.groupby("particle_type"):
                counts = false_pick_kinds(own, truth, radius)
                hits = int(per_class.loc[name, "tp_0.5"])
                rows.append({"class": name, "particles": int((truth["particle_type"] == name)
                                                             .sum()),
                             "picks": len(own), "hits": hits,
                             "duplicate": counts.pop("within half a radius") - hits, **counts})
        print(f"\n{model_dir} ({len(paths)} test tomograms, the model's thresholds): "
              "false picks by kind")
        if not rows:
            print("no picks at the model's thresholds")
            continue
        table = pd.DataFrame(rows).groupby("class", sort=False).sum()
        print(table[["particles", "picks", "hits", *KINDS]].to_string())


if __name__ == "__main__":
    main()

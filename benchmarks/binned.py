"""What binning costs in accuracy: models trained at 2**level x the voxel size, all scored on
the same unbinned test tomograms.

Per level, a model is trained (supervised, the same steps and crop side in voxels, so about the
same compute per step; a crop at level 1 covers 8x the volume) on the labelled tomograms read at
that level (MRC mean-binned on reading, as `--level` does). Each model then picks the test
tomograms at their own voxel size: a binned model resamples them on the fly and returns picks in
their Angstrom. Printed per level: training time, predict time per tomogram, per-class F1 at
0.5 x radius, mean F1 and the CZII score.

    python benchmarks/binned.py                      # this 2-core CPU, about 15 minutes
    python benchmarks/binned.py --shape 184 630 630 --steps 3000 --preset paper --crop 96
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ablation import print_per_run, score_model

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.io.formats import read_any_tomogram
from napari_semietpicker.io.tomogram import read_tomogram
from napari_semietpicker.simulate import simulate_dataset
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="binned-run")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1])
    p.add_argument("--labelled", type=int, default=2)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256))
    p.add_argument("--density", type=float, default=3.0, help="x the CZII particle density")
    p.add_argument("--data-seed", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--preset", default="light")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", nargs="+", default=["auto"],
                   help="score every model predicting in each (fp32, bf16, auto)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    device = resolve_device(args.device)
    classes = load_classes("czii")
    picks = simulate_dataset(out / "data", n=args.labelled + args.test, shape=tuple(args.shape),
                             seed=args.data_seed, classes=classes, density=args.density)
    paths = sorted((out / "data" / "tomograms").glob("*.mrc"))
    test = [read_tomogram(p) for p in paths[args.labelled:]]
    truth = picks[picks["experiment"].isin([t.name for t in test])]
    print(f"data: {len(paths)} simulated tomograms {tuple(args.shape)} at "
          f"{test[0].voxel_size:g} A; labelled {args.labelled}, test {args.test} "
          f"({len(truth)} particles); device {device}; {args.steps} steps, preset "
          f"{args.preset}, crop {args.crop}, batch {args.batch_size}, threshold "
          f"{args.threshold}", flush=True)
    rows = []
    for level in args.levels:
        labelled = [prepare_volume(read_any_tomogram(p, level=level), picks, classes)
                    for p in paths[:args.labelled]]
        for seed in args.seeds:
            model_dir = out / f"level{level}" / f"seed{seed}"
            config = TrainConfig(steps=args.steps, cotrain_steps=0, preset=args.preset,
                                 crop=args.crop, batch_size=args.batch_size, seed=seed,
                                 device=args.device, checkpoint_every=10**9)
            start = time.perf_counter()
            Trainer(config, classes, labelled, model_dir).run()
            train_s = time.perf_counter() - start
            for precision in args.precisions:
                start = time.perf_counter()
                row = score_model(model_dir, test, truth, classes, args.threshold, device,
                                  precision)
                predict_s = (time.perf_counter() - start) / len(test)
                rows.append({"level": level, "voxel A": labelled[0].voxel_size, "seed": seed,
                             "precision": precision, "train s": train_s,
                             "predict s": predict_s, **row})
                print(f"level {level} ({labelled[0].voxel_size:g} A) seed {seed}: trained in "
                      f"{train_s:.0f} s; predicting in {precision}: {predict_s:.1f} s per test "
                      f"tomogram, F1@0.5 {row['F1@0.5']:.3f}, CZII {row['CZII']:.3f}",
                      flush=True)
    print_per_run(rows)


if __name__ == "__main__":
    main()

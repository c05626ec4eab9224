"""Training speed: steps and crops per second, and the data pipeline's share of the time.

Runs the real Trainer (crop sampling, targets, augmentation, loss, Adam) on a simulated
CZII-sized tomogram for each preset and prints the figures and peak memory. "data %" is
the host time spent making batches (in the prefetch thread); "waited %" is the time the
training loop actually waited for them, which prefetching keeps near zero.

Variants (``--variants``) change one thing each: ``fp32`` is the Trainer as it is (weights
channels-last, oneDNN's preferred layout), ``bf16`` trains under bfloat16 autocast (as on a
GPU), ``contiguous`` stores the network's weights in the plain NCDHW layout instead,
``compile`` runs the student through torch.compile. ``--bin 2`` trains
at 20 A (the tomogram mean-binned 2x, the CPU default). Crops and batch sizes can be lists;
"Mvox/s" (crop voxels per second) compares them fairly.

    python benchmarks/train_speed.py [--presets light] [--steps 20] [--device cpu]
    python benchmarks/train_speed.py --bin 2 --variants fp32 bf16 contiguous compile \
        --crops 64 96 --batch-sizes 2 4
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time

import numpy as np
import torch

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import autocast, resolve_device
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.tomogram import Tomogram, bin_tomogram
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

CZII_SHAPE = (184, 630, 630)


def fake_labelled(classes, n_per_class: int = 30, shape: tuple[int, int, int] = CZII_SHAPE,
                  binning: int = 1):
    """A random volume with random picks: timing does not depend on the content."""
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    positions = rng.uniform(0, np.array(shape) - 1, size=(n_per_class * len(classes), 3))
    names = [c.name for c in classes for _ in range(n_per_class)]
    picks = picks_from_positions(positions * 10.0, "bench", names)
    return prepare_volume(bin_tomogram(Tomogram(volume, 10.0, "bench"), binning), picks, classes)


def apply_variant(trainer: Trainer, variant: str) -> None:
    """Change one thing in how ``trainer`` computes (see the module docstring)."""
    if variant == "bf16":
        trainer._autocast = lambda: autocast("bf16", trainer.device)
    elif variant == "contiguous":
        trainer.student.to(memory_format=torch.contiguous_format)
    elif variant == "compile":
        trainer.forward_student = torch.compile(trainer.student)
    elif variant != "fp32":
        raise ValueError(f"unknown variant {variant!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["light"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2])
    parser.add_argument("--crops", type=int, nargs="+", default=[96])
    parser.add_argument("--bin", type=int, default=1, help="train at 10 A x this")
    parser.add_argument("--variants", nargs="+", default=["fp32"],
                        help="fp32 (as the Trainer is), bf16, contiguous, compile")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    classes = load_classes("czii")
    labelled = [fake_labelled(classes, binning=args.bin)]
    print(f"device {device}, tomogram {labelled[0].data.shape} at {labelled[0].voxel_size:g} A, "
          f"{args.steps} steps after 3 warm-up steps; threads {torch.get_num_threads()}")
    print(f"{'preset':8} {'variant':13} {'crop':>4} {'batch':>5} {'step s':>8} {'steps/s':>8} "
          f"{'crops/s':>8} {'Mvox/s':>7} {'data %':>7} {'waited %':>8} {'peak host GB':>12} "
          f"{'peak GPU GB':>11}")
    for preset, variant, crop, batch_size in itertools.product(
            args.presets, args.variants, args.crops, args.batch_sizes):
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(steps=args.steps + 3, batch_size=batch_size,
                                 crop=crop, preset=preset, device=args.device,
                                 checkpoint_every=10**9)
            trainer = Trainer(config, classes, labelled, tmp)
            apply_variant(trainer, variant)
            data_time = [0.0]  # host time making batches (crops, targets, augmentation)
            make = trainer.make_batch

            def timed_make(step, make=make, data_time=data_time):
                t = time.perf_counter()
                out = make(step)
                data_time[0] += time.perf_counter() - t
                return out

            trainer.make_batch = timed_make
            trainer.total_steps = 3
            trainer.run()  # warm-up (allocations, cuDNN autotuning, compilation)
            data_time[0], trainer.data_wait_s = 0.0, 0.0
            trainer.total_steps = config.steps
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            per_step = elapsed / args.steps
            gpu = torch.cuda.max_memory_allocated(device) / 1024**3 \
                if device.type == "cuda" else float("nan")
            host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
            print(f"{preset:8} {variant:13} {crop:>4} {batch_size:>5} {per_step:>8.3f} "
                  f"{1 / per_step:>8.2f} {batch_size / per_step:>8.2f} "
                  f"{batch_size * crop**3 / per_step / 1e6:>7.2f} "
                  f"{100 * data_time[0] / elapsed:>6.1f}% "
                  f"{100 * trainer.data_wait_s / elapsed:>7.1f}% {host:>12.2f} {gpu:>11.2f}",
                  flush=True)


if __name__ == "__main__":
    main()

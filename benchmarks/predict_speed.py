"""Time picking one CZII-sized tomogram (184 x 630 x 630 at 10 A) end to end.

Prints wall time (read + normalise + sliding window + peaks + CSV) and peak memory,
per preset, without and with the four flip views, and the time to re-pick after a
threshold change from cached peaks. ``--bins 1 2`` adds a model trained at 2x the voxel
size (20 A): the tomogram is resampled to it on the fly (binned inference). In the same
run, the same volume goes through MONAI's ``sliding_window_inference`` (overlap 0.25,
Gaussian blending) with a MONAI ``BasicUNet`` of comparable width, and the ratio is
printed. Weights are random: speed does not depend on them.

    pip install monai   # for the baseline (the ``bench`` extra)
    python benchmarks/predict_speed.py [--presets light paper] [--bins 1 2] [--device cuda]
        [--compile]
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import resolve_device
from napari_semietpicker.inference.predict import PredictConfig, pick_tomogram
from napari_semietpicker.io.picks import write_picks_csv
from napari_semietpicker.io.tomogram import read_tomogram, write_tomogram
from napari_semietpicker.model.checkpoint import ModelCard
from napari_semietpicker.model.network import ModelConfig, build_model

CZII_SHAPE = (184, 630, 630)


def peak_host_memory_gb() -> float:
    """Peak resident memory since the last :func:`reset_peak_host_memory` (or the start)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def reset_peak_host_memory() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM); elsewhere the peak
    stays that of the whole run."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def monai_baseline(path: Path, n_classes: int, device: torch.device, roi: int,
                   batch_size: int, tta: bool) -> float:
    """Seconds for the same job through MONAI: read, normalise, sliding window, peaks."""
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet

    from napari_semietpicker.io.tomogram import normalize
    from napari_semietpicker.model.heatmap import find_peaks

    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=n_classes,
                    features=(16, 16, 32, 64, 128, 16)).to(device).eval()
    start = time.perf_counter()
    volume = torch.from_numpy(normalize(read_tomogram(path).data))[None, None].to(device)
    views = [(), (2,), (3,), (4,)] if tta else [()]
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                         enabled=device.type == "cuda"):
        total = None
        for dims in views:
            x = volume.flip(dims) if dims else volume
            out = sliding_window_inference(x, (roi,) * 3, batch_size, net, overlap=0.25,
                                           mode="gaussian")
            out = torch.sigmoid(out.flip(dims) if dims else out).float()
            total = out if total is None else total + out
    heat = total[0] / len(views)
    for c in range(n_classes):
        find_peaks(heat[c], 3, 0.05)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["light"])
    parser.add_argument("--shape", type=int, nargs=3, default=CZII_SHAPE, metavar=("D", "H", "W"),
                        help="tomogram shape (default: a CZII tomogram)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--window", type=int, default=PredictConfig.window)
    parser.add_argument("--overlap", type=float, default=PredictConfig.overlap)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--bins", type=int, nargs="+", default=[1],
                        help="model voxel size as a multiple of the tomogram's (binned inference)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network (a warm-up pick compiles it first)")
    parser.add_argument("--no-tta", action="store_true", help="skip the four-view runs")
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI baseline")
    parser.add_argument("--monai-roi", type=int, default=128, help="MONAI window side")
    parser.add_argument("--precisions", nargs="+", default=["auto"],
                        help="network arithmetic per run: fp32, bf16 or auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    classes = load_classes("czii")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "TS_bench.mrc"
        shape = tuple(args.shape)
        volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        write_tomogram(path, volume, 10.0)
        del volume
        print(f"device: {machine(device)}; tomogram {shape} at 10 A; "
              f"window {args.window}, overlap {args.overlap:g}, batch {args.batch_size}")
        print(f"{'preset':8} {'bin':>3} {'views':>5} {'prec':>4} {'time s':>8} {'re-pick ms':>10} "
              f"{'peak host GB':>12} {'peak GPU GB':>11} {'peaks':>8} {'MONAI s':>8} "
              f"{'MONAI/ours':>10}")
        baseline: dict[bool, float] = {}
        runs = [(preset, binning, tta, precision) for preset in args.presets
                for binning in args.bins for tta in ([False] if args.no_tta else [False, True])
                for precision in args.precisions]
        for preset, binning, tta, precision in runs:
            config = ModelConfig(n_classes=len(classes), preset=preset)
            model = build_model(config).to(device).eval()
            # Random weights give flat maps near 0.01; a zero head bias makes many peaks,
            # the worst case for peak finding and re-picking.
            torch.nn.init.zeros_(model.head.bias)
            card = ModelCard(classes=classes, voxel_size=10.0 * binning, model=config)
            predict_config = PredictConfig(window=args.window, overlap=args.overlap, tta=tta,
                                           batch_size=args.batch_size, precision=precision)
            if args.compile:
                model = torch.compile(model)
                t = time.perf_counter()
                pick_tomogram(model, card, read_tomogram(path), predict_config, device)
                print(f"compiled and warmed up in {time.perf_counter() - t:.1f} s", flush=True)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            reset_peak_host_memory()
            start = time.perf_counter()
            tomogram = read_tomogram(path)
            peaks, _ = pick_tomogram(model, card, tomogram, predict_config, device)
            write_picks_csv(peaks.at(0.5), Path(tmp) / "picks.csv")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            t = time.perf_counter()
            for threshold in np.linspace(0.1, 0.9, 20):
                peaks.at(float(threshold))
            repick_ms = (time.perf_counter() - t) / 20 * 1000
            gpu = torch.cuda.max_memory_allocated(device) / 1024**3 \
                if device.type == "cuda" else float("nan")
            host_gb = peak_host_memory_gb()  # before MONAI's run
            if not args.no_monai and binning == 1 and tta not in baseline:
                baseline[tta] = monai_baseline(path, len(classes), device, args.monai_roi,
                                               args.batch_size, tta)
            monai_s = baseline.get(tta, float("nan")) if binning == 1 else float("nan")
            print(f"{preset:8} {binning:>3} {4 if tta else 1:>5} {precision:>4} {elapsed:>8.2f} "
                  f"{repick_ms:>10.2f} {host_gb:>12.2f} {gpu:>11.2f} "
                  f"{len(peaks.picks):>8} {monai_s:>8.2f} {monai_s / elapsed:>10.2f}", flush=True)


if __name__ == "__main__":
    main()

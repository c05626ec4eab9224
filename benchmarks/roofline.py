"""Roofline of picking and training: FLOPs counted, time per stage, share of the machine's peak.

FLOPs are counted by torch's FlopCounterMode (convolutions and matrix products; BatchNorm,
ReLU, pooling and upsampling are memory-bound and not counted) on the meta device, for the
very windows the sliding-window planner computes for a tomogram (found by running the
predictor with a stand-in network that records its inputs), so the window overlap is in.

The peak comes from ``lscpu``: cores x clock x FLOPs per cycle and core, where a core with
AVX-512 does 2 FMA units x 16 float32 lanes x 2 (multiply and add) = 64 float32 FLOPs per
cycle (2 units: Xeon Gold and Platinum; pass ``--fma-units 1`` for parts with one), with
AVX512_BF16 twice that in bfloat16 (VDPBF16PS: 32 products and sums per 512-bit
instruction, same rate), and with AMX 1024 bfloat16 FLOPs per cycle. The clock is
lscpu's maximum where it gives one, else the current one (a VM shows the nominal clock; turbo
can be higher, so shares of peak are upper bounds).

Then one tomogram (random values: speed does not depend on them) is picked stage by stage:
reading, resampling (levels > 0), normalising, then the sliding window under torch.profiler
(window copies with their reflect padding, the network, flips, blending), then peaks; each
stage's time, share, and for the network its FLOP/s and share of peak. A training step (the
network's forward and backward on a batch of crops, the loss and Adam) is timed the same way.

    python benchmarks/roofline.py                       # light, 10 A and 20 A, fp32 and bf16
    python benchmarks/roofline.py --presets light paper --count-only
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import autocast, available_cores, use_available_cores
from napari_semietpicker.inference.predict import (
    PredictConfig,
    peaks_from_heatmaps,
    predict_heatmaps,
    rescale_to_model,
)
from napari_semietpicker.io.tomogram import normalize, read_tomogram, write_tomogram
from napari_semietpicker.model.checkpoint import ModelCard
from napari_semietpicker.model.losses import reweighted_mse
from napari_semietpicker.model.network import ModelConfig, build_model

CZII_SHAPE = (184, 630, 630)


# -- the machine's peak ------------------------------------------------------------------
@dataclass
class Peak:
    cores: int
    ghz: float
    fp32_per_cycle: int
    bf16_per_cycle: int
    how: str

    def flops(self, precision: str) -> float:
        per_cycle = self.bf16_per_cycle if precision == "bf16" else self.fp32_per_cycle
        return self.cores * self.ghz * 1e9 * per_cycle


def machine_peak(fma_units: int = 2) -> Peak:
    """Peak FLOP/s of the cores this process may use, from lscpu (see the module docstring)."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", text, flags=re.M))
    flags = set(fields.get("Flags", "").split())
    physical = int(fields.get("Core(s) per socket", 1)) * int(fields.get("Socket(s)", 1))
    cores = min(physical, available_cores())
    mhz = fields.get("CPU max MHz") or fields.get("CPU MHz")
    if mhz is None:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo).group(1)
    ghz = float(mhz) / 1000
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fp32 = fma_units * lanes * 2
    if "amx_bf16" in flags:
        bf16, bf16_how = 1024, "AMX: 1024"
    elif "avx512_bf16" in flags:
        bf16, bf16_how = 2 * fp32, f"AVX512_BF16: 2 x {fp32} = {2 * fp32}"
    else:
        bf16, bf16_how = fp32, f"no bf16 instructions: as fp32, {fp32}"
    how = (f"{cores} cores x {ghz:.2f} GHz x FLOP/cycle/core (fp32: {fma_units} FMA units x "
           f"{lanes} lanes x 2 = {fp32}; bf16: {bf16_how}) on {fields.get('Model name', '?')}")
    return Peak(cores, ghz, fp32, bf16, how)


# -- counting ----------------------------------------------------------------------------
class WindowRecorder(torch.nn.Module):
    """A stand-in network that records the input shapes the predictor gives it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        stride = self.config.output_stride
        return torch.zeros(x.shape[0], self.config.n_classes, *(s // stride for s in x.shape[2:]))


def planned_windows(config: ModelConfig, shape: tuple[int, ...], predict: PredictConfig
                    ) -> list[tuple[int, ...]]:
    """The input shapes of every forward pass the predictor makes on a volume of ``shape``."""
    recorder = WindowRecorder(config)
    volume = torch.zeros(1).expand(shape)  # no memory: the windows' contents do not matter
    predict_heatmaps(recorder, volume, predict)
    return recorder.shapes


def counted_flops(config: ModelConfig, shape: tuple[int, ...], train: bool = False) -> float:
    """FLOPs of one forward pass (forward and backward with ``train``) on an input shape."""
    model = build_model(config).to("meta").train(train)
    x = torch.empty(shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if train:
            out.mean().backward()
    return float(counter.get_total_flops())


# -- timing one pick, stage by stage ------------------------------------------------------
class ProfiledNetwork(torch.nn.Module):
    """The network inside a profiler range named ``network``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.profiler.record_function("network"):
            return self.model(x)


#: Top-level profiler events of the sliding window, by what they do.
WINDOW_STAGES = {"network": "network", "aten::flip": "flips",
                 "aten::stack": "window copies", "aten::index_select": "window copies",
                 "aten::narrow": "window copies", "aten::to": "window copies",
                 "aten::contiguous": "window copies", "aten::clone": "window copies",
                 "aten::copy_": "window copies", "aten::select": "window copies",
                 "aten::slice": "window copies", "aten::unsqueeze": "window copies",
                 "aten::arange": "window copies", "aten::remainder": "window copies",
                 "aten::where": "window copies", "aten::gt": "window copies",
                 "aten::rsub": "window copies", "aten::sub": "window copies",
                 "aten::mul": "blending", "aten::add_": "blending", "aten::div_": "blending",
                 "aten::div": "blending", "aten::add": "blending", "aten::zeros": "blending",
                 "aten::exp": "blending", "aten::clamp_min": "blending",
                 "aten::max": "blending", "aten::pow": "blending", "aten::neg": "blending",
                 "aten::index": "blending"}


def sliding_window_stages(model: torch.nn.Module, volume: np.ndarray, predict: PredictConfig
                          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Heatmaps, and seconds per stage of the sliding window from the profiler's top level."""
    wrapped = ProfiledNetwork(model)
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        heat = predict_heatmaps(wrapped, volume, predict)
    total = time.perf_counter() - start
    stages: dict[str, float] = {}
    for event in prof.events():
        if event.cpu_parent is None:
            stage = WINDOW_STAGES.get(event.name, "other (sliding window)")
            stages[stage] = stages.get(stage, 0.0) + event.cpu_time_total / 1e6
    stages["loop overhead"] = max(0.0, total - sum(stages.values()))
    return heat, stages


def pick_stages(model: torch.nn.Module, card: ModelCard, path: Path, predict: PredictConfig
                ) -> dict[str, float]:
    """Seconds per stage of picking the tomogram at ``path`` (the steps of pick_tomogram)."""
    stages: dict[str, float] = {}
    t = time.perf_counter()
    tomogram = read_tomogram(path)
    tomogram.data = np.array(tomogram.data)  # the file (page cache) into memory
    stages["reading"] = time.perf_counter() - t
    t = time.perf_counter()
    resampled, grid = rescale_to_model(tomogram, card.voxel_size)
    if resampled is not tomogram.data:
        stages["resampling (binning)"] = time.perf_counter() - t
    t = time.perf_counter()
    volume = normalize(resampled, copy=False)
    stages["normalising"] = time.perf_counter() - t
    heat, window_stages = sliding_window_stages(model, volume, predict)
    stages.update(window_stages)
    t = time.perf_counter()
    peaks_from_heatmaps(heat, card, tomogram.name, grid, volume_shape=volume.shape)
    stages["peaks"] = time.perf_counter() - t
    return stages


def train_step_seconds(config: ModelConfig, batch: int, crop: int, precision: str,
                       steps: int) -> float:
    """Seconds per training step of the network alone: forward, loss, backward, Adam."""
    model = build_model(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, crop, crop, crop, generator=generator)
    target = torch.rand(batch, config.n_classes, crop // 2, crop // 2, crop // 2,
                        generator=generator) ** 8
    times = []
    for _ in range(steps + 2):  # the first two warm oneDNN's kernels up
        t = time.perf_counter()
        with autocast(precision, "cpu"):
            pred = model(image)
        loss = reweighted_mse(pred.float(), target, 4.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[2:]))


def print_stage_table(title: str, stages: dict[str, float], network_flops: float,
                      peak: Peak, precision: str) -> None:
    total = sum(stages.values())
    print(f"\n{title}: {total:.2f} s end to end, {network_flops / 1e12:.3f} TFLOP counted, "
          f"{network_flops / total / 1e9:.0f} GFLOP/s overall "
          f"({100 * network_flops / total / peak.flops(precision):.1f} % of the "
          f"{precision} peak)")
    print(f"  {'stage':24} {'time s':>8} {'share':>6} {'GFLOP/s':>8} {'% of peak':>9}")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        rate = ""
        if stage == "network":
            achieved = network_flops / seconds
            rate = f"{achieved / 1e9:>8.0f} {100 * achieved / peak.flops(precision):>8.1f}%"
        print(f"  {stage:24} {seconds:>8.2f} {100 * seconds / total:>5.1f}% {rate}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["light"])
    p.add_argument("--count-presets", nargs="+", default=["light", "paper"],
                   help="presets whose FLOPs are counted (cheap: no computation)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1],
                   help="model voxel size = 10 A x 2**level (the tomogram stays at 10 A)")
    p.add_argument("--shape", type=int, nargs=3, default=CZII_SHAPE, metavar=("D", "H", "W"))
    p.add_argument("--window", type=int, default=PredictConfig.window)
    p.add_argument("--overlap", type=float, default=PredictConfig.overlap)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--crop", type=int, default=96, help="training crop side")
    p.add_argument("--batch-size", type=int, default=2, help="training crops per step")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--fma-units", type=int, default=2)
    p.add_argument("--count-only", action="store_true", help="count FLOPs; time nothing")
    args = p.parse_args(argv)
    threads = use_available_cores()
    peak = machine_peak(args.fma_units)
    classes = load_classes("czii")
    shape = tuple(args.shape)
    print(f"peak: {peak.flops('fp32') / 1e9:.0f} GFLOP/s fp32, {peak.flops('bf16') / 1e9:.0f} "
          f"GFLOP/s bf16 = {peak.how}; torch {torch.__version__}, {threads} threads, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels")
    print(f"\nFLOPs per tomogram {shape} at 10 A, window {args.window}, overlap "
          f"{args.overlap:g}, one view (four views: x4)")
    print(f"{'preset':8} {'voxel':>6} {'windows':>7} {'window':>15} {'GFLOP/window':>12} "
          f"{'TFLOP computed':>14} {'TFLOP no overlap':>16} {'overlap':>7}")
    counts = {}
    for preset in dict.fromkeys([*args.count_presets, *args.presets]):
        config = ModelConfig(n_classes=len(classes), preset=preset)
        for level in args.levels:
            level_shape = tuple(max(32, round(s / 2**level)) for s in shape)
            windows = planned_windows(config, level_shape,
                                      PredictConfig(window=args.window, overlap=args.overlap,
                                                    tta=False))
            flops = sum(counted_flops(config, w) for w in windows)
            voxels = sum(int(np.prod(w[2:])) for w in windows)
            per_voxel = flops / voxels
            counts[preset, level] = flops
            print(f"{preset:8} {10 * 2**level:>4} A {len(windows):>7} "
                  f"{'x'.join(map(str, windows[0][2:])):>15} {flops / len(windows) / 1e9:>12.1f}"
                  f" {flops / 1e12:>14.3f} {per_voxel * np.prod(level_shape) / 1e12:>16.3f} "
                  f"{voxels / np.prod(level_shape):>6.2f}x", flush=True)
    crop_shape = (args.batch_size, 1, args.crop, args.crop, args.crop)
    print(f"\ntraining step, {args.batch_size} crops of {args.crop}^3, forward + backward:")
    for preset in dict.fromkeys([*args.count_presets, *args.presets]):
        config = ModelConfig(n_classes=len(classes), preset=preset)
        print(f"  {preset:8} {counted_flops(config, crop_shape, train=True) / 1e9:.1f} GFLOP")
    if args.count_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "TS_roofline.mrc"
        write_tomogram(path, np.random.default_rng(0).normal(size=shape).astype(np.float32), 10.0)
        for preset in args.presets:
            config = ModelConfig(n_classes=len(classes), preset=preset)
            model = build_model(config).eval()
            torch.nn.init.zeros_(model.head.bias)  # many peaks: the worst case for peaks
            for level in args.levels:
                card = ModelCard(classes=classes, voxel_size=10.0 * 2**level, model=config)
                for precision in args.precisions:
                    predict = PredictConfig(window=args.window, overlap=args.overlap,
                                            tta=False, precision=precision)  # one view
                    stages = pick_stages(model, card, path, predict)
                    print_stage_table(f"pick, {preset} at {10 * 2**level} A, {precision}",
                                      stages, counts[preset, level], peak, precision)
        for preset in args.presets:
            config = ModelConfig(n_classes=len(classes), preset=preset)
            flops = counted_flops(config, crop_shape, train=True)
            for precision in args.precisions:
                seconds = train_step_seconds(config, args.batch_size, args.crop, precision,
                                             args.train_steps)
                print(f"\ntraining step, {preset}, {precision}: {seconds:.3f} s, "
                      f"{flops / seconds / 1e9:.0f} GFLOP/s, "
                      f"{100 * flops / seconds / peak.flops(precision):.1f} % of the "
                      f"{precision} peak", flush=True)


if __name__ == "__main__":
    main()

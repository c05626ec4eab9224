"""One-shot GPU suite: picking, a MONAI baseline, training and co-training, in one run.

Made for a GPU lent for minutes: one command, nothing to install but the project, under 8
minutes on one NVIDIA GPU, every row timed after a warm-up and kept even when another row
fails. Picking a CZII-sized tomogram (184 x 630 x 630 at 10 A, random weights: speed does not
depend on them) with the light and paper presets, 1 and 4 views, bf16 and fp32,
channels-last on and off, 1 and 4 windows per batch, the volume streamed from the host or
held on the GPU, torch.compile and CUDA graphs on and off; MONAI's sliding_window_inference
with a BasicUNet in the same run (when monai is installed: the ``bench`` extra); training
steps per second per preset; a short co-training run. Rows go to benchmarks/results/ (text
and JSON) and to stdout as a table.

``pick s`` is pick_tomogram on a raw volume in host memory (normalise, windows, network,
blending, peaks); ``heatmaps s`` the sliding window alone on the normalised volume; ``peaks s``
peak finding on its heatmaps.

    python benchmarks/gpu_suite.py             # one CUDA GPU
    python benchmarks/gpu_suite.py --smoke     # CPU, tiny sizes, < 2 minutes: it all runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from train_speed import fake_labelled

from napari_semietpicker.classes import load_classes
from napari_semietpicker.compute import use_available_cores
from napari_semietpicker.inference.predict import (
    PredictConfig,
    peaks_from_heatmaps,
    pick_tomogram,
    predict_heatmaps,
)
from napari_semietpicker.io.tomogram import Tomogram, normalize, write_tomogram
from napari_semietpicker.model.checkpoint import ModelCard
from napari_semietpicker.model.network import ModelConfig, build_model
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

RESULTS = Path(__file__).parent / "results"


@dataclass
class Sizes:
    """What a run measures: the real sizes on a GPU, tiny ones for ``--smoke``."""

    device: str
    shape: tuple[int, int, int]
    presets: tuple[str, ...]
    window: int
    batch: int
    repeats: int  # timed calls after a warm-up call (0: one call, no warm-up)
    crop: int
    train_batch: int
    train_steps: int
    cotrain_steps: int
    warm_up_steps: int
    monai_roi: int
    compile_backend: str  # "inductor"; "eager" in the smoke run (tests the wiring, fast)
    budget_s: float


FULL = Sizes("cuda", (184, 630, 630), ("light", "paper"), 256, 4, 3, 96, 2, 20, 20, 3, 128,
             "inductor", 420.0)
SMOKE = Sizes("cpu", (32, 64, 64), ("tiny",), 64, 2, 0, 32, 2, 1, 1, 1, 32, "eager", 100.0)


@dataclass
class Row:
    """One measurement: what was run, its figures, or why it did not run."""

    name: str
    settings: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    status: str = "ok"


class CudaGraphed(torch.nn.Module):
    """Replays a CUDA graph of the network per input shape (captured on first use)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.graphs: dict[tuple, tuple] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amp = torch.is_autocast_enabled("cuda")
        key = (tuple(x.shape), x.stride(), x.dtype, amp)
        if key not in self.graphs:
            static_in = x.clone()
            # Autocast's weight cache cannot live across a capture (torch.cuda.graphs docs).
            cast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                  cache_enabled=False) if amp else contextlib.nullcontext()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), cast:
                for _ in range(2):  # warm-up outside the graph, as the CUDA graph docs ask
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), cast:
                static_out = self.model(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up call (allocations, cuDNN
    autotuning, compilation, graph capture), and the last result; 0: one call, no warm-up."""
    if repeats > 0:
        fn()
    times = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def network(preset: str, n_classes: int, device: torch.device, compile_mode: str | None,
            graphs: bool, backend: str) -> torch.nn.Module:
    """The network with random weights (many peaks), compiled or graphed as asked."""
    config = ModelConfig(n_classes=n_classes, preset=preset)
    model = build_model(config).to(device).eval()
    torch.nn.init.zeros_(model.head.bias)
    model = model.to(memory_format=torch.channels_last_3d)
    if graphs and compile_mode is None:
        model = CudaGraphed(model)
    if compile_mode is not None:
        compiled = torch.compile(model, backend=backend,
                                 mode=None if backend == "eager" else compile_mode)
        compiled.config = config
        model = compiled
    return model


def predict_rows(sizes: Sizes) -> list[dict]:
    """The picking settings, most telling first (the budget may stop the list)."""
    rows = []
    for preset in sizes.presets:
        base = dict(preset=preset, views=1, precision="bf16", channels_last=True,
                    batch=sizes.batch, on_device=False, compile=None, graphs=False)
        rows += [base, {**base, "views": 4}, {**base, "precision": "fp32"},
                 {**base, "channels_last": False}, {**base, "batch": 1},
                 {**base, "on_device": True}, {**base, "graphs": True}]
    for preset in sizes.presets:
        base = dict(preset=preset, views=1, precision="bf16", channels_last=True,
                    batch=sizes.batch, on_device=True, compile="default", graphs=False)
        rows += [base, {**base, "compile": "reduce-overhead", "graphs": True}]
    return rows


def run_predict(settings: dict, sizes: Sizes, raw: np.ndarray, classes, device: torch.device
                ) -> dict:
    if settings["graphs"] and device.type != "cuda":
        raise NotImplementedError("CUDA graphs need a CUDA device")
    model = network(settings["preset"], len(classes), device, settings["compile"],
                    settings["graphs"], sizes.compile_backend)
    card = ModelCard(classes=classes, voxel_size=10.0, model=model.config)
    config = PredictConfig(window=sizes.window, tta=settings["views"] == 4,
                           batch_size=settings["batch"], precision=settings["precision"],
                           channels_last=settings["channels_last"])
    tomogram = Tomogram(raw, 10.0, "TS_suite")
    volume = torch.from_numpy(normalize(raw))
    if settings["on_device"]:
        volume = volume.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    figures = {}
    if not settings["on_device"]:  # pick_tomogram streams windows from the host
        figures["pick s"], _ = timed(lambda: pick_tomogram(model, card, tomogram, config,
                                                           device), device, sizes.repeats)
    figures["heatmaps s"], heat = timed(lambda: predict_heatmaps(model, volume, config, device),
                                        device, sizes.repeats)
    figures["peaks s"], peaks = timed(lambda: peaks_from_heatmaps(heat, card, "TS_suite"),
                                      device, sizes.repeats)
    figures["peaks"] = len(peaks.picks)
    if device.type == "cuda":
        figures["peak GPU GB"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return figures


def run_monai(sizes: Sizes, path: Path, n_classes: int, device: torch.device, views: int
              ) -> dict:
    from predict_speed import monai_baseline  # needs monai (the bench extra)

    seconds, _ = timed(lambda: monai_baseline(path, n_classes, device, sizes.monai_roi,
                                              sizes.batch, views == 4), device, sizes.repeats)
    return {"pick s": seconds}


def run_training(sizes: Sizes, preset: str, classes, labelled, unlabelled, cotrain: bool
                 ) -> dict:
    """Steps per second of the real Trainer (crops, augmentation, loss, Adam)."""
    warm_up = sizes.warm_up_steps  # co-training: burn-in, then one step makes the teacher
    measured = sizes.cotrain_steps if cotrain else sizes.train_steps
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(steps=warm_up if cotrain else warm_up + measured,
                             cotrain_steps=measured + 1 if cotrain else 0,
                             batch_size=sizes.train_batch, crop=sizes.crop, preset=preset,
                             device=sizes.device, checkpoint_every=10**9)
        trainer = Trainer(config, classes, labelled, tmp, unlabelled if cotrain else ())
        full = trainer.total_steps
        first = warm_up + (1 if cotrain else 0)
        trainer.total_steps = first
        trainer.run()
        trainer.total_steps = full
        device = trainer.device
        synchronize(device)
        start = time.perf_counter()
        result = trainer.run()
        synchronize(device)
        elapsed = time.perf_counter() - start
        timed_steps = trainer.total_steps - first
        figures = {"steps/s": timed_steps / elapsed, "crops/s": timed_steps *
                   sizes.train_batch / elapsed, "final loss": result.losses[-1]}
        if cotrain:
            figures["teacher"] = trainer.teacher is not None
        return figures


def print_table(rows: list[Row]) -> str:
    lines = [f"{'row':58} {'status':8} figures"]
    for row in rows:
        figures = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in row.figures.items())
        lines.append(f"{row.name:58} {row.status[:60]:8} {figures}")
    return "\n".join(lines)


def describe(settings: dict) -> str:
    parts = [settings["preset"], f"{settings['views']} view{'s' * (settings['views'] > 1)}",
             settings["precision"], "channels-last" if settings["channels_last"] else "NCDHW",
             f"batch {settings['batch']}", "volume on device" if settings["on_device"]
             else "streamed"]
    if settings["compile"]:
        parts.append(f"compile {settings['compile']}")
    if settings["graphs"]:
        parts.append("CUDA graphs")
    return "predict " + ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check it all runs")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no row after this many seconds (default 420; smoke 100)")
    args = p.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.budget_s is not None:
        sizes = replace(sizes, budget_s=args.budget_s)
    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_suite: no CUDA GPU here; run with --smoke on a CPU")
    threads = use_available_cores()
    device = torch.device(sizes.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        machine = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, "
                   f"cuDNN {torch.backends.cudnn.version()}")
    else:
        machine = f"{platform.processor() or platform.machine()}, {threads} threads"
    start = time.perf_counter()
    header = (f"gpu_suite{' --smoke' if args.smoke else ''}: {machine}; torch {torch.__version__}; "
              f"tomogram {sizes.shape} at 10 A, window {sizes.window}, overlap 0.25")
    print(header, flush=True)
    classes = load_classes("czii")
    raw = np.random.default_rng(0).normal(size=sizes.shape).astype(np.float32)
    rows: list[Row] = []

    def attempt(name: str, settings: dict, run: Callable[[], dict]) -> None:
        row = Row(name, settings)
        if time.perf_counter() - start > sizes.budget_s:
            row.status = "skipped: time budget spent"
        else:
            try:
                row.figures = run()
            except ImportError as err:
                row.status = f"skipped: {err} (pip install monai, the bench extra)"
            except NotImplementedError as err:
                row.status = f"skipped: {err}"
            except Exception as err:  # one failing row must not lose the others
                row.status = f"failed: {type(err).__name__}: {err}"
                traceback.print_exc()
        rows.append(row)
        print(print_table([row]).splitlines()[1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "TS_suite.mrc"
        write_tomogram(path, raw, 10.0)
        plan = predict_rows(sizes)
        for settings in plan[:2]:  # the first preset's 1 and 4 views first
            attempt(describe(settings), settings,
                    lambda s=settings: run_predict(s, sizes, raw, classes, device))
        for views in (1, 4):
            attempt(f"MONAI sliding_window_inference + BasicUNet, {views} view(s), "
                    f"roi {sizes.monai_roi}", {"views": views},
                    lambda v=views: run_monai(sizes, path, len(classes), device, v))
        labelled = [fake_labelled(classes, n_per_class=30 if sizes.device == "cuda" else 2,
                                  shape=sizes.shape)]
        unlabelled = [prepare_volume(Tomogram(raw, 10.0, "TS_unlabelled"))]
        for preset in sizes.presets:
            attempt(f"train {preset}, crop {sizes.crop}, batch {sizes.train_batch}",
                    {"preset": preset}, lambda pr=preset: run_training(
                        sizes, pr, classes, labelled, unlabelled, cotrain=False))
        attempt(f"co-train {sizes.presets[0]}, {sizes.cotrain_steps} steps, 4-view teacher",
                {"preset": sizes.presets[0]}, lambda: run_training(
                    sizes, sizes.presets[0], classes, labelled, unlabelled, cotrain=True))
        for settings in plan[2:]:
            attempt(describe(settings), settings,
                    lambda s=settings: run_predict(s, sizes, raw, classes, device))
    table = print_table(rows)
    total = time.perf_counter() - start
    print(f"\n{header}\n{table}\ntotal {total:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu-suite-smoke" if args.smoke else "gpu-suite-" + "".join(
        c if c.isalnum() else "-" for c in machine.split(",")[0]).strip("-").lower()
    (args.out / f"{stem}.txt").write_text(f"{header}\n{table}\ntotal {total:.0f} s\n")
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"machine": machine, "torch": torch.__version__, "sizes": asdict(sizes),
         "total_s": total, "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()

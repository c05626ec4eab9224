"""``semietpicker demo``: the whole loop on simulated data, in napari when there is a display.

Headless: simulate three tomograms, train on two (burn-in, then co-training on the
third as unlabelled data), pick the third, print the scores against its known picks.
With a display: open napari with the plugin's docks and a sample tomogram instead.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEMO_SHAPE = (64, 192, 192)
#: Three times the CZII particle density: about 30 particles per demo tomogram.
DEMO_DENSITY = 3.0
DEMO_CROP = 64


def has_display() -> bool:
    """Whether a GUI can open here (X11/Wayland on Linux; always on macOS/Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(out: Path, headless: bool = False, steps: int = 300) -> int:
    """Run the demo; returns a process exit code."""
    if not headless and has_display():
        from ._qt.launch import open_napari

        return open_napari()
    print("no display (or --headless): running the headless demo; "
          "with a display this command opens napari instead")
    return run_headless(out, steps)


def run_headless(out: Path, steps: int) -> int:
    """The headless demo; it first times a training step and says how long it will take."""
    from .classes import load_classes
    from .io.picks import select
    from .metrics import chance_level, evaluate
    from .pipeline import Picker, TrainingSet, pick, train
    from .simulate import simulate_dataset
    from .training.config import TrainConfig
    from .training.timing import measure_step_seconds, training_seconds

    classes = load_classes("czii")
    start = time.perf_counter()
    config = TrainConfig(steps=steps, cotrain_steps=steps // 3, crop=DEMO_CROP, preset="light",
                         ema_alpha=0.01, checkpoint_every=max(50, steps // 4))
    step_s = measure_step_seconds(config.preset, config.crop, config.batch_size, len(classes))
    eta = training_seconds(step_s, config.steps, config.cotrain_steps)
    print(f"this takes about {eta:.0f} s here: {config.steps} training and "
          f"{config.cotrain_steps} co-training steps at {step_s:.2f} s per step (a step "
          "timed just now), then simulating and picking, a few seconds each", flush=True)
    simulating = time.perf_counter()
    picks = simulate_dataset(out / "data", n=3, shape=DEMO_SHAPE, seed=0, classes=classes,
                             density=DEMO_DENSITY)
    paths = sorted((out / "data" / "tomograms").glob("*.mrc"))
    print(f"simulated {len(paths)} tomograms {DEMO_SHAPE} with {len(picks)} picks "
          f"in {time.perf_counter() - simulating:.0f} s")
    training_set = TrainingSet.build(paths[:2], picks, classes, paths[2:])
    labelled, unlabelled = training_set.labelled, training_set.unlabelled

    def report(p) -> None:
        if p.step % 25 == 0 or p.step == p.total_steps:
            print(f"  step {p.step}/{p.total_steps} {p.phase}: loss {p.loss:.4f}, "
                  f"eta {p.eta_s:.0f} s", flush=True)

    print(f"training on {', '.join(v.name for v in labelled)} "
          f"(unlabelled: {unlabelled[0].name}) on the CPU...")
    train(training_set, config, out / "model", on_progress=report)
    picker = Picker.load(out / "model")
    picked = next(pick(picker, paths[2:]))
    test = picked.tomogram
    predicted = picked.peaks.at(picker.card.class_thresholds())
    truth = select(picks, experiment=test.name)
    result = evaluate(predicted, truth, classes)
    chance = chance_level(truth, {test.name: tuple(test.extent_A)}, classes)
    print(f"\npicked {test.name}: {len(predicted)} picks; scores against its known picks:")
    print(result.format_table())
    print(f"\nrandom picks of the same counts (mean of 10 draws): CZII score "
          f"{chance['score']:.3f} (model: {result.score:.3f})")
    print(f"\nfiles in {out}: data/ (tomograms, picks.csv), model/ (safetensors + config)")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0

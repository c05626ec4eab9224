"""Training-time estimates before a run starts (the dock's and the demo's ETA)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..compute import resolve_device
from ..model.losses import reweighted_mse
from ..model.network import ModelConfig, build_model

#: A co-training step also runs the teacher on four views of the unlabelled crops: about
#: twice the cost of a supervised step.
COTRAIN_STEP_COST = 2.0


def measure_step_seconds(preset: str, crop: int, batch_size: int, n_classes: int,
                         device_name: str = "auto",
                         should_stop: Callable[[], bool] = lambda: False) -> float:
    """Seconds one training step (forward, loss, backward, update) takes here: the time of
    a second step on random crops, after a first one that warms up (for an ETA before
    training; the real loop adds data sampling and augmentation, a few percent)."""
    device = resolve_device(device_name)
    model = build_model(ModelConfig(n_classes=n_classes, preset=preset)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 1, crop, crop, crop, device=device)
    took = 0.0
    for _ in range(2):
        if should_stop():
            break
        start = time.perf_counter()
        out = model(x)
        loss = reweighted_mse(out, torch.rand_like(out))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - start
    return took


def training_seconds(step_seconds: float, steps: int, cotrain_steps: int) -> float:
    """Expected training time: supervised steps plus co-training steps at their cost."""
    return step_seconds * (steps + COTRAIN_STEP_COST * cotrain_steps)

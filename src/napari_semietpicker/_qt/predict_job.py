"""The prediction dock's job, run in a worker thread (no Qt here): load the model unless it
is cached, then pick one tomogram (sliding window, peaks with scores, heatmaps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..checkpoint import ModelCard, load_model
from ..io.tomogram import Tomogram
from ..model import AsymmetricUNet3D
from ..predict import PeakCache, PredictConfig, pick_tomogram
from ..train import resolve_device


def run_prediction(model_dir: Path, cached: tuple[AsymmetricUNet3D, ModelCard] | None,
                   tomogram: Tomogram, config: PredictConfig, device_name: str,
                   on_progress: Callable[[int, int], None], should_stop: Callable[[], bool]
                   ) -> tuple[AsymmetricUNet3D, ModelCard, PeakCache, np.ndarray]:
    """Load the model (unless cached) and pick one tomogram; runs in the worker thread."""
    device = resolve_device(device_name)
    model, card = cached if cached is not None else load_model(model_dir, device)
    model.to(device)
    volume = replace(tomogram, data=np.asarray(tomogram.data))
    peaks, heat = pick_tomogram(model, card, volume, config, device, on_progress, should_stop)
    return model, card, peaks, heat.float().cpu().numpy()

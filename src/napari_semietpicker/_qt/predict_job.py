"""The prediction dock's job, run in a worker thread (no Qt here): load the model unless it
is loaded already, then pick one tomogram with the core's :func:`..pipeline.pick`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..inference.predict import PredictConfig
from ..io.tomogram import Tomogram
from ..pipeline import Picked, Picker, pick


def run_prediction(model_dir: Path, loaded: Picker | None, tomogram: Tomogram,
                   config: PredictConfig, device_name: str,
                   on_progress: Callable[[int, int], None], should_stop: Callable[[], bool]
                   ) -> tuple[Picker, Picked]:
    """Pick one tomogram with the model in ``model_dir`` (``loaded`` when it is current)."""
    picker = loaded if loaded is not None and loaded.is_current(model_dir, device_name) \
        else Picker.load(model_dir, device_name)
    picked = next(pick(picker, [tomogram], config, progress=lambda _: on_progress,
                       should_stop=should_stop))
    return picker, picked

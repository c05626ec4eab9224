"""The training dock's job: gathered on the GUI thread, run in a worker thread (no Qt here).

A job trains a new model, continues one (``resume``: same folder, optimiser, step and
schedule) or fine-tunes one (``init_from``: its weights, a fresh optimiser and schedule,
written into a new folder).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoint import CONFIG, TRAINER_STATE, WEIGHTS, ModelCard, load_card
from ..classes import ParticleClass
from ..data import prepare_volume
from ..geometry import same_voxel_size
from ..io.formats import read_any_tomogram
from ..io.tomogram import Tomogram, bin_tomogram
from ..train import TrainConfig, Trainer, TrainProgress, TrainResult


@dataclass
class TrainJob:
    """Everything a training run needs, gathered on the GUI thread (no Qt objects inside)."""

    config: TrainConfig
    classes: list[ParticleClass]
    labelled: list[tuple[Tomogram, pd.DataFrame]]
    unlabelled: list[Tomogram | Path]
    out_dir: Path
    resume: bool = False
    init_from: Path | None = None
    bin_factor: int = 1  # train on tomograms mean-binned this many times (a coarser model)
    notes: list[str] = field(default_factory=list)


def _in_memory(tomogram: Tomogram, bin_factor: int) -> Tomogram:
    """The tomogram binned as the job asks, its voxels read into memory."""
    binned = bin_tomogram(tomogram, bin_factor)
    return replace(binned, data=np.asarray(binned.data))


def run_job(job: TrainJob, on_progress: Callable[[TrainProgress], None],
            should_stop: Callable[[], bool]) -> TrainResult:
    """Prepare the volumes and train (in the worker thread: normalising can take seconds)."""
    labelled = [prepare_volume(_in_memory(t, job.bin_factor), picks, job.classes)
                for t, picks in job.labelled]
    unlabelled = []
    for source in job.unlabelled:
        tomogram = read_any_tomogram(source) if isinstance(source, Path) else source
        unlabelled.append(prepare_volume(_in_memory(tomogram, job.bin_factor)))
        if should_stop():
            return TrainResult(0, True, "stopped")
    trainer = Trainer(job.config, job.classes, labelled, job.out_dir, unlabelled,
                      resume=job.resume, init_from=job.init_from)
    return trainer.run(on_progress=on_progress, should_stop=should_stop)


def _adopt_model(job: TrainJob, model_dir: Path) -> ModelCard:
    """Train the classes (in their order) and network preset of the model in ``model_dir``;
    a class the model does not know is refused."""
    card = load_card(model_dir)
    known = {c.name: c for c in card.classes}
    unknown = sorted({c.name for c in job.classes} - set(known))
    if unknown:
        raise ValueError(f"the model in {model_dir} knows the classes "
                         f"{', '.join(known)}, not {', '.join(unknown)}: train a new model.")
    job.classes = list(card.classes)
    job.config.preset = card.model.preset
    voxel_size = job.labelled[0][0].voxel_size
    factor = int(round(card.voxel_size / voxel_size))
    if factor < 1 or not same_voxel_size(card.voxel_size, factor * voxel_size):
        raise ValueError(f"the model in {model_dir} works at {card.voxel_size:g} A voxels, "
                         f"which no binning of these {voxel_size:g} A tomograms gives.")
    if factor != job.bin_factor:
        job.notes.append(f"binning {factor}x, as the model was trained")
        job.bin_factor = factor
    return card


def prepare_resume(job: TrainJob) -> None:
    """Continue the model in ``job.out_dir``: the burn-in goes on for the steps asked."""
    if not (job.out_dir / TRAINER_STATE).is_file():
        raise ValueError(f"{job.out_dir} holds no training state ({TRAINER_STATE}) to "
                         "continue from: untick 'continue' to train a new model.")
    card = _adopt_model(job, job.out_dir)
    done = int(card.history.get("steps_done", 0))
    job.config.steps = done + job.config.steps
    job.resume = True
    job.notes.append(f"continuing from step {done}")


def prepare_fine_tune(job: TrainJob, model_dir: Path) -> None:
    """Start from the weights of the model in ``model_dir`` with a fresh optimiser and
    schedule; the result goes into ``job.out_dir``."""
    if not (model_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"{model_dir}: missing weights file {WEIGHTS}")
    if model_dir.resolve() == job.out_dir.resolve():
        raise ValueError(f"fine-tuning {model_dir} needs another folder to write into")
    _adopt_model(job, model_dir)
    job.init_from = model_dir
    job.notes.append(f"fine-tuning {model_dir.name}")


def fine_tune_folder(model_dir: Path) -> Path:
    """The first free ``<model>-ft<i>`` folder beside a model."""
    return next(model_dir.with_name(f"{model_dir.name}-ft{i}") for i in range(1, 10_000)
                if not model_dir.with_name(f"{model_dir.name}-ft{i}").exists())


def copy_model(source: Path, target: Path) -> Path:
    """Copy a model folder's files (weights, config, training state) into ``target``."""
    if target.resolve() == source.resolve():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, CONFIG, TRAINER_STATE):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    return target


def available_devices() -> list[str]:
    """The devices this machine has: ``auto``, then ``cuda`` and ``mps`` if present, ``cpu``."""
    devices = ["auto"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def has_accelerator() -> bool:
    """Whether ``auto`` trains on a GPU (CUDA or Apple MPS) rather than the CPU."""
    return len(available_devices()) > 2

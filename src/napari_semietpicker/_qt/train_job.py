"""The training dock's job: gathered on the GUI thread, run in a worker thread (no Qt here).

A job trains a new model, continues one (``resume``: same folder, optimiser, step and
schedule) or fine-tunes one (``init_from``: its weights, a fresh optimiser and schedule,
written into a new folder). The work is the core's (:mod:`..pipeline`); a job only holds
the dock's inputs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..classes import ParticleClass
from ..geometry import same_voxel_size
from ..io.tomogram import Tomogram
from ..model.checkpoint import CONFIG, TRAINER_STATE, WEIGHTS, ModelCard, load_card
from ..pipeline import TrainingSet, train
from ..training.config import (
    CONTINUED_SETTINGS,
    FINE_TUNE_LR,
    TrainConfig,
    TrainProgress,
    TrainResult,
    learning_rate,
    setting,
)


@dataclass
class TrainJob:
    """Everything a training run needs, gathered on the GUI thread (no Qt objects inside).

    ``config.steps`` and ``config.cotrain_steps`` are the schedule's totals, also when
    continuing (see :class:`~napari_semietpicker.training.config.TrainConfig`).
    """

    config: TrainConfig
    classes: list[ParticleClass]
    labelled: list[tuple[Tomogram, pd.DataFrame]]
    unlabelled: list[Tomogram | Path]
    out_dir: Path
    resume: bool = False
    init_from: Path | None = None
    level: int = 0  # train on tomograms mean-binned 2**level times (a coarser model)
    notes: list[str] = field(default_factory=list)


def run_job(job: TrainJob, on_progress: Callable[[TrainProgress], None],
            should_stop: Callable[[], bool]) -> TrainResult:
    """Build the training set and train (in the worker thread: normalising takes seconds)."""
    picks = pd.concat([p for _, p in job.labelled], ignore_index=True)
    try:
        training_set = TrainingSet.build([t for t, _ in job.labelled], picks, job.classes,
                                         job.unlabelled, level=job.level,
                                         should_stop=should_stop)
    except InterruptedError:
        return TrainResult(0, True, "stopped")
    return train(training_set, job.config, job.out_dir, resume=job.resume,
                 init_from=job.init_from, on_progress=on_progress, should_stop=should_stop)


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
    if factor < 1 or factor & (factor - 1) or \
            not same_voxel_size(card.voxel_size, factor * voxel_size):
        raise ValueError(f"the model in {model_dir} works at {card.voxel_size:g} A voxels, "
                         f"which no binning by a power of 2 of these {voxel_size:g} A "
                         "tomograms gives.")
    level = factor.bit_length() - 1
    if level != job.level:
        job.notes.append(f"binning {factor}x, as the model was trained")
        job.level = level
    return card


def _chosen(job: TrainJob, name: str) -> Any:
    """The job's setting ``name`` if the user changed it, None if it is left at
    ``TrainConfig``'s default."""
    value = getattr(job.config, name)
    return None if value == getattr(TrainConfig, name) else value


def prepare_resume(job: TrainJob) -> None:
    """Continue the model in ``job.out_dir`` up to the job's step totals."""
    if not (job.out_dir / TRAINER_STATE).is_file():
        raise ValueError(f"{job.out_dir} holds no training state ({TRAINER_STATE}) to "
                         "continue from: untick 'continue' to train a new model.")
    card = _adopt_model(job, job.out_dir)
    job.resume = True
    for name in CONTINUED_SETTINGS:  # the model's own, where the dock is left at the default
        setattr(job.config, name, setting(name, _chosen(job, name), card))
    job.notes.append(f"continuing from step {int(card.history.get('steps_done', 0))}")


def prepare_fine_tune(job: TrainJob, model_dir: Path) -> None:
    """Start from the weights of the model in ``model_dir`` with a fresh optimiser and
    schedule; the result goes into ``job.out_dir``. The dock's default learning rate
    becomes fine-tuning's (:data:`FINE_TUNE_LR`); a rate the user set is kept."""
    if not (model_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"{model_dir}: missing weights file {WEIGHTS}")
    if model_dir.resolve() == job.out_dir.resolve():
        raise ValueError(f"fine-tuning {model_dir} needs another folder to write into")
    _adopt_model(job, model_dir)
    job.init_from = model_dir
    job.notes.append(f"fine-tuning {model_dir.name}")
    chosen = _chosen(job, "lr")
    job.config.lr = learning_rate(chosen, fine_tune=True)
    if chosen is None:
        job.notes.append(f"learning rate {FINE_TUNE_LR:g} (fine-tuning's default)")


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

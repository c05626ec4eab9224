"""The core entry points both faces call: a :class:`TrainingSet`, :func:`train` and :func:`pick`.

The CLI turns files and options into these inputs, the napari docks turn layers into them;
both turn the results back into their outputs (files and messages; layers). Reading,
binning and normalising tomograms happens here and below, never in the faces, so a model
trained or a tomogram picked from either is the same for the same inputs and seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import distributed as dist
from .classes import ParticleClass
from .compute import resolve_device
from .inference.batch import parts_dir, prepare_parts, run_manifest
from .inference.predict import PeakCache, PredictConfig, pick_tomogram
from .io.copick_io import read_copick_tomogram
from .io.formats import picks_format, read_any_tomogram, read_picks, write_picks
from .io.picks import empty_picks, read_picks_csv, write_picks_csv
from .io.tomogram import Tomogram, bin_tomogram, write_tomogram
from .model.checkpoint import WEIGHTS, ModelCard, load_model
from .model.network import AsymmetricUNet3D
from .training.config import TrainConfig, TrainProgress, TrainResult
from .training.data import Volume, prepare_volume, warn_unmatched_picks
from .training.loop import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopickRun:
    """The tomogram of one copick run: an opened project (``copick_io.open_project``), the
    run's name, the voxel spacing (Angstrom) and the tomogram type (e.g. ``denoised``)."""

    project: Any
    run: str
    voxel_spacing: float
    tomo_type: str


#: Where a tomogram comes from: a file (MRC family or zarr), a copick run, or a volume in
#: memory with its voxel size and offset (a :class:`Tomogram`, e.g. a napari layer's data).
TomogramSource = Tomogram | str | Path | CopickRun


def open_tomogram(source: TomogramSource, level: int = 0,
                  voxel_size: float | None = None) -> Tomogram:
    """A source's tomogram, ``2**level`` times coarser than its full resolution, lazily.

    A zarr store or a copick run gives its stored pyramid level; an MRC file and a volume
    in memory are mean-binned (their grid, voxel size and offset follow). ``voxel_size``
    overrides a file's header (files only: a volume in memory carries its own).
    """
    if level < 0:
        raise ValueError(f"{_label(source)}: level must be 0 or more, got {level}")
    if isinstance(source, Tomogram):
        return bin_tomogram(source, 2**level)
    if isinstance(source, CopickRun):
        return read_copick_tomogram(source.project, source.run, source.voxel_spacing,
                                    source.tomo_type, level)
    return read_any_tomogram(source, level=level, voxel_size=voxel_size)


def _label(source: TomogramSource) -> str:
    if isinstance(source, Tomogram):
        return source.label
    return f"copick run {source.run}" if isinstance(source, CopickRun) else str(source)


#: Picks of a training set: a table in Angstrom, a picks file, or a reader of the opened
#: tomograms' picks.
PicksSource = pd.DataFrame | str | Path | Callable[[Sequence[Tomogram]], pd.DataFrame]


def read_training_picks(path: str | Path, tomograms: Sequence[Tomogram],
                        voxel_size: float | None = None) -> pd.DataFrame:
    """A picks file for these tomograms: RELION 5 centres are counted from each tomogram's
    centre; voxel coordinates (RELION 4, .coords) are in the pixel size the file names, or
    ``voxel_size``."""
    relion5 = picks_format(path) == "relion5"
    return read_picks(path, shape={t.name: t.shape for t in tomograms},
                      voxel_size={t.name: t.voxel_size for t in tomograms}
                      if relion5 else voxel_size)


@dataclass
class TrainingSet:
    """What a model trains on: normalised labelled volumes with their picks (voxel
    positions, class indices, hard negatives), normalised unlabelled volumes, the classes."""

    classes: list[ParticleClass]
    labelled: list[Volume]
    unlabelled: list[Volume] = field(default_factory=list)

    @classmethod
    def build(cls, labelled: Sequence[TomogramSource], picks: PicksSource,
              classes: Sequence[ParticleClass], unlabelled: Sequence[TomogramSource] = (),
              *, level: int = 0, voxel_size: float | None = None,
              should_stop: Callable[[], bool] | None = None) -> TrainingSet:
        """Open each source at ``level`` (see :func:`open_tomogram`), normalise it and
        attach its picks (rows whose ``experiment`` is the tomogram's name).

        ``picks`` is a table in Angstrom, a picks file (:func:`read_training_picks`) or a
        function of the opened tomograms that reads their picks (e.g. from a copick
        project). Picks of runs that name no tomogram are warned about. ``should_stop`` is asked
        after each volume (normalising can take seconds): True raises InterruptedError.
        """
        def stop_if_asked() -> None:
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped while preparing the tomograms")

        tomograms = [open_tomogram(s, level, voxel_size) for s in labelled]
        if not tomograms:
            raise ValueError("training needs at least one labelled tomogram")
        source = picks if isinstance(picks, str | Path) else "picks"
        if isinstance(picks, str | Path):
            picks = read_training_picks(picks, tomograms, voxel_size)
        elif not isinstance(picks, pd.DataFrame):
            picks = picks(tomograms)
        warn_unmatched_picks(picks, [t.name for t in tomograms], source)
        volumes = []
        for tomogram in tomograms:
            volumes.append(prepare_volume(tomogram, picks, classes))
            stop_if_asked()
        others = []
        for other in unlabelled:
            others.append(prepare_volume(open_tomogram(other, level, voxel_size)))
            stop_if_asked()
        return cls(list(classes), volumes, others)


def train(training_set: TrainingSet, config: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, init_from: str | Path | None = None,
          on_progress: Callable[[TrainProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a model into ``out_dir`` on ``training_set`` (see :class:`.train.Trainer`).

    ``config.steps`` and ``config.cotrain_steps`` are the schedule's totals counted from
    the model's first step, also when resuming: ``resume`` continues the model in
    ``out_dir`` (student, EMA teacher, optimiser, step) up to those totals, so continuing
    with the same settings after a stop gives the model an uninterrupted run would have.
    ``init_from`` fine-tunes: that model's weights with a fresh optimiser and schedule.
    """
    trainer = Trainer(config, training_set.classes, training_set.labelled, out_dir,
                      training_set.unlabelled, resume=resume, init_from=init_from)
    return trainer.run(on_progress=on_progress, should_stop=should_stop)


@dataclass
class Picker:
    """A trained model loaded on a device, with its card and folder; ``weights_mtime_ns``
    tells whether the folder still holds these weights (a cache key for the docks)."""

    model: AsymmetricUNet3D
    card: ModelCard
    model_dir: Path
    device: torch.device
    weights_mtime_ns: int

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "auto") -> Picker:
        """Load the model in ``model_dir`` onto ``device`` (``auto``: see resolve_device)."""
        model_dir = Path(model_dir)
        target = resolve_device(device) if isinstance(device, str) else device
        model, card = load_model(model_dir, target)
        return cls(model.to(target), card, model_dir, target,
                   (model_dir / WEIGHTS).stat().st_mtime_ns)

    def is_current(self, model_dir: str | Path, device: str | torch.device = "auto") -> bool:
        """Whether this is the model now in ``model_dir``, on that device."""
        weights = Path(model_dir) / WEIGHTS
        target = resolve_device(device) if isinstance(device, str) else device
        return (Path(model_dir) == self.model_dir and target == self.device
                and weights.is_file() and weights.stat().st_mtime_ns == self.weights_mtime_ns)


@dataclass
class Picked:
    """One tomogram picked: the tomogram, its candidate peaks with scores (thresholds
    filter them, :meth:`.predict.PeakCache.at`) and the heatmaps (classes, d, h, w) on
    ``peaks.heatmap_grid``."""

    tomogram: Tomogram
    peaks: PeakCache
    heatmaps: np.ndarray


def pick(picker: Picker, sources: Sequence[TomogramSource], config: PredictConfig | None = None,
         *, level: int = 0, voxel_size: float | None = None,
         progress: Callable[[Tomogram], Callable[[int, int], None] | None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> Iterator[Picked]:
    """Pick each source in turn (opened as :func:`open_tomogram` does; normalised and
    resampled to the model's voxel size by :func:`.predict.pick_tomogram`).

    ``progress`` gives a per-window callback for a tomogram (or None); ``should_stop``
    is asked between windows (True raises InterruptedError).
    """
    for source in sources:
        tomogram = open_tomogram(source, level, voxel_size)
        if isinstance(source, Tomogram):  # a layer's lazy array (dask, zarr): read it once
            tomogram = replace(tomogram, data=np.asarray(tomogram.data))
        on_progress = progress(tomogram) if progress is not None else None
        peaks, heat = pick_tomogram(picker.model, picker.card, tomogram, config, picker.device,
                                    on_progress, should_stop)
        yield Picked(tomogram, peaks, heat.float().cpu().numpy())


def pick_into(picker: Picker, tomograms: Sequence[Tomogram], out: str | Path,
              thresholds: float | dict[str, float], config: PredictConfig | None = None, *,
              overwrite: bool = False, heatmaps_dir: str | Path | None = None,
              progress: Callable[[Tomogram], Callable[[int, int], None] | None] | None = None,
              write_options: dict | None = None) -> pd.DataFrame | None:
    """Pick ``tomograms`` (this rank's share under torchrun) into the picks file ``out``.

    Each tomogram's picks go to ``<out>.parts/<name>.csv`` when done, so a re-run skips
    finished ones (:mod:`.batch`); rank 0 merges the parts into ``out`` and returns the
    table (None on the other ranks). ``heatmaps_dir`` receives ``<name>_<class>.mrc``;
    ``write_options`` go to :func:`.io.formats.write_picks` (each tomogram's voxel size and
    shape are given already).
    """
    names = [t.name for t in tomograms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several tomograms share the name(s) {', '.join(duplicates)}: "
                         "picks are keyed by tomogram name")
    parts = parts_dir(out)
    prepare_parts(parts, run_manifest(picker.model_dir, thresholds), names, overwrite)
    todo = []
    for tomogram in dist.shard(tomograms):
        if (parts / f"{tomogram.name}.csv").is_file():
            log.info("rank %d: %s already picked, skipping", dist.rank(), tomogram.name)
        else:
            todo.append(tomogram)
    for picked in pick(picker, todo, config, progress=progress):
        tomogram, grid = picked.tomogram, picked.peaks.heatmap_grid
        if heatmaps_dir is not None:
            assert grid is not None  # pick_tomogram always sets it
            origin = tuple(np.add(tomogram.origin_A, grid.offset_A))
            for c, cls in enumerate(picker.card.classes):
                write_tomogram(Path(heatmaps_dir) / f"{tomogram.name}_{cls.name}.mrc",
                               picked.heatmaps[c].astype(np.float32), grid.voxel_size, origin)
        write_picks_csv(picked.peaks.at(thresholds), parts / f"{tomogram.name}.csv")
        log.info("rank %d: picked %s", dist.rank(), tomogram.name)
    dist.barrier()
    if not dist.is_main():
        return None
    tables = [read_picks_csv(parts / f"{name}.csv") for name in names]
    merged = pd.concat(tables, ignore_index=True) if tables else empty_picks()
    write_picks(merged, out, keep_previous=True,
                **{"voxel_size": {t.name: t.voxel_size for t in tomograms},
                   "shape_by_experiment": {t.name: t.shape for t in tomograms},
                   **(write_options or {})})
    return merged

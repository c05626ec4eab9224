"""Burn-in and co-training loops (paper sections 2.2-2.3), Qt-free.

Progress goes through a callback and a stop flag is checked every step, so the CLI
(tqdm, Ctrl-C) and the napari worker (progress bar, Stop button) share this code.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import distributed as dist
from ..classes import ParticleClass
from ..compute import resolve_device
from ..geometry import same_voxel_size
from ..inference.predict import is_out_of_memory
from ..inference.thresholds import thresholds_and_labelled_score, tune_model_thresholds
from ..model.checkpoint import (
    ModelCard,
    load_card,
    load_model,
    load_trainer_state,
    save_model,
)
from ..model.heatmap import nms_kernels
from ..model.losses import reweighted_mse
from ..model.network import (
    SIZE_MULTIPLE,
    AsymmetricUNet3D,
    ModelConfig,
    build_model,
    channels_last,
)
from ..model.views import FLIP_VIEWS, predict_views
from .augment import random_flip_rot, random_intensity, strong_augment
from .config import BACKGROUND_WEIGHT, TrainConfig, TrainProgress, TrainResult
from .data import CropSampler, Volume, check_training_set, crop_shape_for
from .prefetch import Prefetcher
from .semi import (
    PSEUDO_LABELS,
    batchnorm_statistics_frozen,
    ema_rate,
    ema_update,
    peak_pseudo_labels,
    recompute_batchnorm_statistics,
    unlabelled_weight_factor,
)

log = logging.getLogger(__name__)


#: Independent random streams of one step (their order here is part of the seeds).
STREAMS = ("labelled", "unlabelled", "strong", "statistics")

#: Crops of the labelled tomograms on which the weight average's (co-training's teacher's)
#: BatchNorm statistics are recomputed when training ends (see
#: semi.recompute_batchnorm_statistics).
STATISTICS_CROPS = 200


def step_generator(seed: int, rank: int, step: int, stream: str) -> torch.Generator:
    """The random source of one step's ``stream``: a function of its arguments alone.

    Seeding every step afresh, rather than drawing from one long-lived generator, makes a
    step's data independent of everything before it: resuming needs no generator state,
    prefetching cannot change the data, and the ablation settings train on the same crops
    (with DropBlock on or off, only the strong views differ).
    """
    words = np.random.SeedSequence([seed, rank, step, STREAMS.index(stream)]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 31 | int(words[1]) >> 1)


@dataclass
class StepBatch:
    """One step's inputs: augmented labelled crops and targets; in co-training, also
    unlabelled crops in their weak (teacher) and strong (student) views."""

    image: torch.Tensor
    target: torch.Tensor
    weak: torch.Tensor | None = None
    strong: torch.Tensor | None = None

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> StepBatch:
        def optional(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else fn(t)

        return StepBatch(fn(self.image), fn(self.target), optional(self.weak),
                         optional(self.strong))

    def to(self, device: torch.device) -> StepBatch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> StepBatch:
        return self._map(torch.Tensor.pin_memory)


def trainable_sizes(batch_size: int, crop_shape: Sequence[int]) -> bool:
    """Whether BatchNorm can train on this batch: more than one value per channel at the
    deepest stage (stride 32), e.g. not one crop of 32^3."""
    return batch_size * int(np.prod(np.asarray(crop_shape) // SIZE_MULTIPLE)) > 1


def _sizes_text(batch_size: int, crop_shape: Iterable[int]) -> str:
    return f"batch {batch_size} of crops {tuple(int(s) for s in crop_shape)}"


def _lr_factor(step: int, total: int, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 5% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Trains a model directory: burn-in on labelled crops, then optional co-training.

    On a GPU, batches are made two steps ahead in a background thread (:class:`Prefetcher`);
    on the CPU, where that thread would compete with the model for cores, they are made inline.
    Under torchrun the student is wrapped in DistributedDataParallel: each rank samples
    its own crops (the rank is part of every step's seed), gradients are averaged, the EMA
    teacher is updated identically on every rank, and rank 0 alone writes the model
    directory.

    The teacher is a running average of the student's weights. A supervised run keeps one
    too, over its last ``config.average_last`` steps (no pseudo-labels: a weight average,
    what most of co-training's gain on the czii-20A benchmark came from), and saves it if
    it scores higher on the labelled tomograms than the last weights.
    """

    def __init__(self, config: TrainConfig, classes: Sequence[ParticleClass],
                 labelled: Sequence[Volume], out_dir: str | Path,
                 unlabelled: Sequence[Volume] = (), resume: bool = False,
                 init_from: str | Path | None = None) -> None:
        """``resume`` continues ``out_dir`` where it stopped (optimiser, step, schedule);
        ``init_from`` fine-tunes: it starts from that model's weights with a fresh
        optimiser and schedule (its classes and preset must match)."""
        self.config = config
        self.classes = list(classes)
        self.out_dir = Path(out_dir)
        self.voxel_size = check_training_set(labelled, classes, unlabelled)
        self.device = resolve_device(config.device)
        dist.init_from_env(self.device.type)
        self.total_steps = config.steps + (config.cotrain_steps if unlabelled else 0)
        if config.steps < 0 or config.cotrain_steps < 0 or self.total_steps < 1:
            raise ValueError(f"{self.out_dir}: nothing to train: {config.steps} burn-in and "
                             f"{config.cotrain_steps} co-training steps"
                             f"{'' if unlabelled else ' (no unlabelled tomograms)'}; "
                             "give at least one step")
        if config.unlabelled_weight < 0:
            raise ValueError(f"the unlabelled loss weight must be >= 0, got "
                             f"{config.unlabelled_weight}")
        if config.pseudo_labels not in PSEUDO_LABELS:
            raise ValueError(f"pseudo-labels must be one of {', '.join(PSEUDO_LABELS)}, "
                             f"got {config.pseudo_labels!r}")
        if not 0.0 <= config.average_last <= 1.0:
            raise ValueError(f"the averaged fraction of training must be in [0, 1], got "
                             f"{config.average_last}")
        if config.checkpoint_every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got "
                             f"{config.checkpoint_every}")
        if config.cotrain_steps and not unlabelled:
            log.warning("co-training asked for but no unlabelled tomograms given: "
                        "training supervised only (burn-in)")
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        model_config = ModelConfig(n_classes=len(classes), preset=config.preset)
        crop_shape = crop_shape_for([*labelled, *unlabelled], config.crop)
        if not trainable_sizes(config.batch_size, crop_shape):
            raise ValueError(f"a {_sizes_text(config.batch_size, crop_shape)} is too small to "
                             f"train on: BatchNorm needs more than one value per channel at "
                             f"stride {SIZE_MULTIPLE}; use a batch of 2 or crops of "
                             f"{2 * SIZE_MULTIPLE}")
        self.labelled_volumes = list(labelled)
        self.labelled = CropSampler(labelled, crop_shape, classes, model_config.output_stride,
                                    config.positive_fraction, config.negative_fraction,
                                    config.balanced_classes)
        self.unlabelled = CropSampler(unlabelled, crop_shape, (), model_config.output_stride,
                                      0.0) if unlabelled else None
        self.student = channels_last(build_model(model_config).to(self.device))
        #: The running average of the student's weights: co-training's EMA teacher, or a
        #: supervised run's average over its last steps (``average_name`` in the card).
        self.teacher: AsymmetricUNet3D | None = None
        self.cotrains = bool(unlabelled) and config.cotrain_steps > 0
        self.average_name = "teacher" if self.cotrains else "average"
        #: The step from which the teacher averages the student (None: no average).
        self.average_from = config.steps if self.cotrains else self._supervised_average_from()
        #: Which model the directory saves: the teacher once co-training runs, else the
        #: student, unless the other scored higher on the labelled tomograms when training
        #: completed.
        self.saved_model = self.average_name if self.cotrains else "student"
        self.pseudo_thresholds: np.ndarray | None = None  # per class, for "peaks" labels
        self.pseudo_kernels: list[int] = []  # the NMS kernel per class, for "peaks" labels
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.forward_student: torch.nn.Module = self.student
        if dist.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_student = DistributedDataParallel(self.student, device_ids=ids)
        self.step = 0
        self.losses: list[float] = []
        self.data_wait_s = 0.0  # time the loop waited for batches (see Prefetcher.waited_s)
        self.prefetch_depth = 0 if self.device.type == "cpu" else 2
        self.card = ModelCard(classes=self.classes, voxel_size=self.voxel_size,
                              model=model_config)
        self.card.history = {"train_config": asdict(config),
                             "labelled": [v.name for v in labelled],
                             "unlabelled": [v.name for v in unlabelled]}
        if init_from is not None:
            self._init_from(Path(init_from))
        if resume:
            self._resume()

    def _supervised_average_from(self) -> int | None:
        """A supervised run's first averaged step: the start of its last
        ``average_last``; None if off, or if no fully labelled tomogram (or no threshold
        choice) could tell whether the average or the last weights score higher."""
        config = self.config
        if config.average_last == 0 or not config.auto_thresholds or \
                all(v.partial for v in self.labelled_volumes):
            return None
        return min(round(self.total_steps * (1.0 - config.average_last)), self.total_steps - 1)

    def _init_from(self, model_dir: Path) -> None:
        model, card = load_model(model_dir)
        if [c.name for c in card.classes] != [c.name for c in self.classes] or \
                card.model != self.card.model:
            raise ValueError(f"{model_dir}: cannot fine-tune from this model: it was trained "
                             f"for classes {', '.join(c.name for c in card.classes)} with preset "
                             f"{card.model.preset!r}")
        self.student.load_state_dict(model.state_dict())
        self.card.history["fine_tuned_from"] = str(model_dir.resolve())

    # -- checkpoints -------------------------------------------------------------------
    def _resume(self) -> None:
        state = load_trainer_state(self.out_dir)
        if state is None:
            log.warning("%s: nothing to resume from; starting fresh", self.out_dir)
            return
        try:
            self.student.load_state_dict(state["student"])
        except RuntimeError as err:
            raise ValueError(f"{self.out_dir}: cannot resume: it was trained with other classes "
                             f"or another network preset ({str(err).splitlines()[0]})") from err
        saved = load_card(self.out_dir)
        saved_names = [c.name for c in saved.classes]
        if saved_names != [c.name for c in self.classes]:
            raise ValueError(f"{self.out_dir}: cannot resume: it was trained for classes "
                             f"{', '.join(saved_names)}, not "
                             f"{', '.join(c.name for c in self.classes)} (same order)")
        if not same_voxel_size(saved.voxel_size, self.voxel_size):
            raise ValueError(f"{self.out_dir}: cannot resume: it was trained at "
                             f"{saved.voxel_size:g} A voxels and these tomograms are at "
                             f"{self.voxel_size:g} A; read them at the model's binning (--level)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.card.thresholds = saved.thresholds  # tuned ones are kept
        self.losses = [float(x) for x in state["losses"]]
        burn_in = saved.history.get("train_config", {}).get("steps")
        if "pseudo_label_thresholds" in saved.history:  # fixed when co-training began
            self.card.history["pseudo_label_thresholds"] = saved.history[
                "pseudo_label_thresholds"]
        if saved.history.get("unlabelled") and burn_in is not None and self.step > burn_in:
            self._keep_cotraining(int(burn_in), state.get("teacher"))
        elif not self.cotrains and self.average_from is not None:
            self._keep_averaging(saved.history.get("average_from_step"), state.get("teacher"))
        if self.step >= self.total_steps:
            raise ValueError(f"{self.out_dir}: the model has trained {self.step} steps, as many "
                             f"as asked ({self.total_steps}; burn-in and co-training steps count "
                             "from the model's first step): raise them to continue")
        log.info("resumed %s at step %d", self.out_dir, self.step)

    def _keep_cotraining(self, burn_in: int, teacher_state: dict | None) -> None:
        """Continue a model whose co-training began after ``burn_in`` steps: its EMA
        teacher goes on (``teacher_state`` of the resume state; the saved weights for a
        directory written before the state held it), and the burn-in stays where it ended."""
        if self.unlabelled is None:
            raise ValueError(f"{self.out_dir}: cannot continue: its co-training began at step "
                             f"{burn_in} and needs unlabelled tomograms to go on")
        if self.config.steps != burn_in:
            log.warning("%s: co-training began at step %d; continuing keeps that burn-in "
                        "(not %d steps)", self.out_dir, burn_in, self.config.steps)
            self.total_steps += burn_in - self.config.steps
            self.config.steps = self.average_from = burn_in
            self.card.history["train_config"] = asdict(self.config)
        teacher = channels_last(load_model(self.out_dir, self.device)[0])
        if teacher_state is not None:
            teacher.load_state_dict(teacher_state)
        self._start_teacher(teacher)

    def _keep_averaging(self, began: int | None, average_state: dict | None) -> None:
        """Continue a supervised run's weight average where it had begun (at step
        ``began``, kept in the card) from ``average_state``; one that had not begun starts
        at this run's ``average_from``. Without a kept average it starts from the student."""
        assert self.average_from is not None
        if began is not None and self.step > began:
            self.average_from = int(began)
        if self.step > self.average_from:
            average = copy.deepcopy(self.student)
            if average_state is not None:
                average.load_state_dict(average_state)
            self._start_teacher(average)

    def _start_teacher(self, teacher: AsymmetricUNet3D) -> None:
        """Freeze ``teacher`` as the weight average (co-training's EMA teacher); fix the
        thresholds of peak pseudo-labels; note where a supervised average began."""
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if not self.cotrains:
            self.card.history["average_from_step"] = self.average_from
        elif self.config.pseudo_labels == "peaks":
            self.pseudo_thresholds = self._pseudo_label_thresholds()
            self.pseudo_kernels = nms_kernels(self.classes, self.voxel_size,
                                              self.card.model.output_stride)

    def _pseudo_label_thresholds(self) -> np.ndarray:
        """Per-class confidence of peak pseudo-labels: the burn-in model's thresholds for
        F1 on the labelled tomograms (a kept peak as likely right as a missed one), chosen
        once when co-training begins and kept in the card so a continued run reuses them.
        Without a fully labelled tomogram, the model's prediction thresholds."""
        kept = self.card.history.get("pseudo_label_thresholds")
        if kept is None:
            complete = [v for v in self.labelled_volumes if not v.partial]
            assert self.teacher is not None
            chosen = (tune_model_thresholds(self.teacher, self.card, complete, self.device,
                                            beta=1.0) if complete
                      else self.card.class_thresholds())
            kept = self.card.history["pseudo_label_thresholds"] = chosen
            log.info("peak pseudo-labels from the teacher's scores of at least: %s",
                     ", ".join(f"{name} {value:.2f}" for name, value in chosen.items()))
        return np.array([float(kept[c.name]) for c in self.classes])

    def save(self) -> None:
        """Write the prediction model (see ``saved_model``) and the resume state.

        Collective under torchrun (buffers are synchronised first); only rank 0 writes.
        """
        dist.broadcast_buffers(self.student)
        if self.teacher is not None:
            dist.broadcast_buffers(self.teacher)
        if not dist.is_main():
            return
        self.card.history.update(steps_done=self.step, losses=self.losses[-2000:])
        state = {"student": self.student.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "losses": torch.tensor(self.losses, dtype=torch.float64)}
        saved = self.student
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
            if self.saved_model != "student":
                saved = self.teacher
        save_model(self.out_dir, saved, self.card, trainer_state=state)

    # -- one step ----------------------------------------------------------------------
    def _autocast(self):
        enabled = self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _cotraining(self, step: int) -> bool:
        """Whether ``step`` is a co-training step (after the burn-in, with unlabelled data)."""
        return self.unlabelled is not None and step >= self.config.steps

    def make_batch(self, step: int) -> StepBatch:
        """Step ``step``'s crops and augmentations, on the host (run ahead by the prefetcher)."""
        config, rank = self.config, dist.rank()
        generator = step_generator(config.seed, rank, step, "labelled")
        image, target = self.labelled.sample(config.batch_size, generator)
        assert target is not None  # a labelled sampler returns targets
        image, target = random_flip_rot(image, target, generator)
        batch = StepBatch(random_intensity(image, generator), target)
        if self.unlabelled is not None and self._cotraining(step) and \
                config.unlabelled_weight:
            generator = step_generator(config.seed, rank, step, "unlabelled")
            weak, _ = self.unlabelled.sample(config.batch_size, generator)
            batch.weak, _ = random_flip_rot(weak, weak, generator)
            batch.strong = strong_augment(batch.weak,
                                          step_generator(config.seed, rank, step, "strong"),
                                          config.drop_rate, config.dropblock)
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def _lam(self) -> float:
        """The loss's background weight at this step (``TrainConfig.lam_warmup``)."""
        return BACKGROUND_WEIGHT if self.step < self.config.lam_warmup else self.config.lam

    def _unlabelled_loss(self, weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
        views = FLIP_VIEWS if self.config.multi_view else ((),)
        assert self.teacher is not None  # only co-training steps come here
        with self._autocast():
            pseudo = predict_views(self.teacher, weak, views)
            with batchnorm_statistics_frozen(self.student):
                pred = self.forward_student(strong)
        if self.pseudo_thresholds is not None:
            assert self.labelled.sigmas is not None  # a labelled sampler knows its classes
            pseudo = peak_pseudo_labels(pseudo, self.pseudo_kernels, self.labelled.sigmas,
                                        self.pseudo_thresholds)
        return reweighted_mse(pred, pseudo, self._lam())

    def _train_step(self, batch: StepBatch) -> tuple[float, float | None]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * _lr_factor(self.step, self.total_steps)
        self.student.train()

        def labelled_loss() -> torch.Tensor:
            nonlocal batch
            batch = batch.to(self.device)
            with self._autocast():
                pred = self.forward_student(batch.image)
            return reweighted_mse(pred, batch.target, self._lam())

        loss = self._loss_on_every_rank(labelled_loss)
        loss_u = None
        if self._cotraining(self.step) and self.config.unlabelled_weight:
            weak, strong = batch.weak, batch.strong
            assert weak is not None and strong is not None  # co-training batches have both
            loss_u = self._loss_on_every_rank(lambda: self._unlabelled_loss(weak, strong))
            weight = self.config.unlabelled_weight * unlabelled_weight_factor(
                self.step - self.config.steps, self.config.unlabelled_rampup)
            loss = loss + weight * loss_u
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss.backward()
        except Exception as err:
            if dist.is_distributed() and is_out_of_memory(err):
                raise dist.RankOutOfMemoryError(
                    f"rank {dist.rank()} ran out of memory in the backward pass at step "
                    f"{self.step}; the other ranks wait on its gradients, so this run cannot "
                    f"go on. {self.out_dir} keeps the last checkpoint: rerun with --resume "
                    f"and a smaller --batch-size or --crop") from err
            raise
        self.optimizer.step()
        if self.teacher is not None:
            assert self.average_from is not None  # the teacher began there
            ema_update(self.teacher, self.student, ema_rate(
                self.step - self.average_from, self.config.ema_alpha, self.config.ema_schedule))
        return loss.item(), None if loss_u is None else loss_u.item()

    def _loss_on_every_rank(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()`` a loss; out of memory or a non-finite loss on any rank raises on all.

        Under torchrun a rank that ran out of memory must not leave the others alone in the
        next collective (DDP's buffer broadcast at each forward, the gradient all-reduce):
        one small all-reduce after each forward lets every rank shrink and retry together.
        """
        failure: BaseException | None = None
        loss = None
        try:
            loss = compute()
        except Exception as err:
            if not (dist.is_distributed() and is_out_of_memory(err)):
                raise
            failure = err
        out_of_memory, not_finite = dist.any_ranks(
            [failure is not None, loss is not None and not torch.isfinite(loss).item()],
            self.device)
        if out_of_memory:
            raise failure or MemoryError(f"out of memory on another rank at step {self.step}")
        if not_finite:
            value = "not finite on another rank" if loss is None else loss.item()
            raise FloatingPointError(f"loss became {value} at step {self.step}")
        assert loss is not None
        return loss

    def _shrink_for_memory(self) -> bool:
        """After running out of memory: halve the batch, else shrink crops; False if minimal."""
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        before = _sizes_text(self.config.batch_size, self.labelled.crop_shape)
        crop = np.maximum(self.labelled.crop_shape - SIZE_MULTIPLE, SIZE_MULTIPLE)
        if self.config.batch_size > 1:
            self.config.batch_size //= 2
        elif (crop < self.labelled.crop_shape).any() and trainable_sizes(1, crop):
            for sampler in (self.labelled, self.unlabelled):
                if sampler is not None:
                    sampler.crop_shape = crop
        else:
            return False
        log.warning("out of memory at step %d with %s; retrying with %s", self.step, before,
                    _sizes_text(self.config.batch_size, self.labelled.crop_shape))
        return True

    # -- the loop ----------------------------------------------------------------------
    def run(self, on_progress: Callable[[TrainProgress], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train until done or stopped; the model directory is usable whatever happens.

        A NaN or infinite loss stops training and keeps the last good checkpoint.
        """
        start, first_step = time.perf_counter(), self.step
        reason = "done"
        batches = self._batches()
        try:
            while self.step < self.total_steps:
                if dist.any_rank(should_stop is not None and should_stop(), self.device):
                    reason = "stopped"
                    break
                if self.teacher is None and self.average_from is not None and \
                        self.step >= self.average_from:
                    self._start_teacher(copy.deepcopy(self.student))
                try:
                    loss, loss_u = self._train_step(batches.get(self.step))
                except FloatingPointError as err:
                    log.error("%s; stopping and keeping the last checkpoint", err)
                    return TrainResult(self.step, True, f"diverged: {err}", self.losses)
                except Exception as err:
                    batches.close()  # before shrinking: batches made ahead have the old size
                    if not (is_out_of_memory(err) and self._shrink_for_memory()):
                        raise
                    self.data_wait_s += batches.waited_s
                    batches = self._batches()
                    continue
                self._after_step(loss, loss_u, start, first_step, on_progress)
        finally:
            batches.close()
            self.data_wait_s += batches.waited_s
        if self.teacher is not None and reason == "done":  # (a stopped run's average keeps
            # its EMA statistics, so that continuing it ends where an uninterrupted run would)
            recompute_batchnorm_statistics(self.teacher, self.statistics_batches())
        if self.config.auto_thresholds and reason == "done" and dist.is_main():
            self._choose_thresholds()
        self.save()
        return TrainResult(self.step, reason != "done", reason, self.losses)

    def statistics_batches(self) -> list[torch.Tensor]:
        """:data:`STATISTICS_CROPS` crops of the labelled tomograms drawn as training draws
        them (around picks with ``positive_fraction``), without augmentation, in batches of
        the training batch size, on the training device: the data the students' statistics
        came from. The same on every rank (the teacher stays identical) and for one step."""
        generator = step_generator(self.config.seed, 0, self.step, "statistics")
        size = self.config.batch_size
        return [self.labelled.sample(size, generator)[0].to(self.device)
                for _ in range(max(1, STATISTICS_CROPS // size))]

    def _choose_thresholds(self) -> None:
        """Per-class thresholds of the prediction model, chosen on the labelled volumes
        (cross-validated between them) and kept in the model card for prediction.

        Where a weight average was kept (co-training's teacher, a supervised run's
        average), it and the student both get thresholds, and the one whose picks of the
        labelled volumes score higher (class-weighted F-beta at its thresholds; the average
        on a tie) is the model saved: on the czii-20A benchmark the co-trained student was
        ahead on the test tomograms after 100 co-training steps (3 seeds of 3) and in 2 of 4
        seeds after 1000."""
        complete = [v for v in self.labelled_volumes if not v.partial]  # all picks known
        if not complete:
            log.info("no fully labelled tomogram: thresholds left as they were")
            return
        models = {"model": self.student} if self.teacher is None else \
            {self.average_name: self.teacher, "student": self.student}
        chosen = {name: thresholds_and_labelled_score(model, self.card, complete, self.device,
                                                      self.config.threshold_beta)
                  for name, model in models.items()}
        best = max(chosen, key=lambda name: chosen[name][1])  # the first of equals
        self.card.thresholds = chosen[best][0]
        self.card.history["thresholds_chosen_on"] = [v.name for v in complete]
        if self.teacher is not None:
            self.saved_model = best
            scores = {name: round(score, 4) for name, (_, score) in chosen.items()}
            self.card.history.update(
                saved_model=best, labelled_scores=scores,
                labelled_thresholds={name: thresholds for name, (thresholds, _) in chosen.items()})
            log.info("saved model: the %s (labelled tomograms' F-beta: %s)", best,
                     ", ".join(f"{name} {score:.3f}" for name, score in scores.items()))
        log.info("thresholds chosen on the labelled tomograms: %s", ", ".join(
            f"{name} {value:.2f}" for name, value in self.card.thresholds.items()))

    def _batches(self) -> Prefetcher[StepBatch]:
        return Prefetcher(self.make_batch, self.step, self.prefetch_depth)

    def _after_step(self, loss: float, loss_u: float | None, start: float, first_step: int,
                    on_progress: Callable[[TrainProgress], None] | None) -> None:
        """Count the step, report progress, checkpoint when due."""
        self.step += 1
        self.losses.append(loss)
        if on_progress is not None and dist.is_main():
            elapsed = time.perf_counter() - start
            rate = elapsed / (self.step - first_step)
            on_progress(TrainProgress(
                self.step, self.total_steps,
                "co-training" if self._cotraining(self.step - 1) else "burn-in", loss, loss_u,
                elapsed, rate * (self.total_steps - self.step)))
        if self.step % self.config.checkpoint_every == 0:
            self.save()

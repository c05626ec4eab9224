"""Training settings and what a run reports: the config and its machine-dependent
defaults (learning rate, crop side), the per-step progress and the result, shared by the
trainer, the CLI and the Training dock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..compute import resolve_device
from ..metrics import CZII_BETA
from ..model.checkpoint import ModelCard

#: The loss's weight on background voxels, the paper's lambda ("a larger lambda improves
#: performance", its section 2.2): the weight of the first ``TrainConfig.lam_warmup``
#: steps. Most background voxels are easy, so lambda weights the hard negatives:
#: distractors and other classes' particles, where the weak classes' false picks are.
BACKGROUND_WEIGHT = 4.0

#: Lambda after the warm-up, and the warm-up's steps. On czii-20A at 2000 supervised steps,
#: lambda 64 from the first step beat 4 in each of 4 seeds (CZII 0.806 against 0.772, mean
#: F1 0.578 against 0.517; 256: 0.696 / 0.477, seed 0), but it halved the demo's 400-step
#: CZII score (0.317 against 0.628): a large weight early keeps the peaks from forming.
#: After a warm-up of 1000 steps at 4 it beat 4 in both seeds tried (0.792 / 0.549 against
#: 0.758 / 0.511, seeds 2-3; co-training 2000 + 500, seed 2: 0.793 / 0.548 against 0.788 /
#: 0.526), and runs of up to ``LAM_WARMUP`` steps (the demo, the dock's CPU budget) train
#: as with the paper's lambda. Figures: benchmarks/results/quality-czii-20A-cpu.txt,
#: sessions 11 and 12.
HARD_NEGATIVE_WEIGHT = 64.0
LAM_WARMUP = 1000

#: Fine-tuning's default learning rate, a tenth of training's: a fine-tune of a few hundred
#: steps at the full rate moves a trained model further than a few dozen review answers can
#: steer it (benchmarks/review.py, docs in the README's review section).
FINE_TUNE_LR = 1e-4


@dataclass
class TrainConfig:
    """Training settings. ``cotrain_steps > 0`` with unlabelled data enables co-training.

    ``steps`` and ``cotrain_steps`` are totals counted from a model's first step, also
    when it is continued: the burn-in ends at step ``steps`` and co-training runs on to step
    ``steps + cotrain_steps``. Continuing a model trains up to those totals (raise them to
    train longer), so a run stopped and continued with the same settings ends where an
    uninterrupted one would. Once co-training has begun its start is fixed: a continued run
    keeps it, and its EMA teacher.

    A supervised run (no unlabelled tomograms) also keeps the running average of its
    weights over the last ``average_last`` of its steps, as co-training's teacher does, and
    saves the average or the last weights, whichever scores higher on the labelled
    tomograms when training completes (it needs ``auto_thresholds`` and a fully labelled
    tomogram; ``average_last = 0`` turns it off).

    The loss weighs background voxels by the paper's lambda (:data:`BACKGROUND_WEIGHT`) for
    the first ``lam_warmup`` steps, by ``lam`` after them (co-training's consistency loss
    too; see :data:`HARD_NEGATIVE_WEIGHT`).
    """

    steps: int = 4000  # light on czii-20A: 4000 beat 2000 in both seeds (README, session 13)
    cotrain_steps: int = 0
    batch_size: int = 2
    crop: int = 96
    lr: float = 1e-3
    preset: str = "light"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200
    positive_fraction: float = 0.7
    negative_fraction: float = 0.5  # of the other crops, near a hard negative (if any)
    balanced_classes: bool = False  # positive crops: a class drawn uniformly, then its pick
    lam: float = HARD_NEGATIVE_WEIGHT
    lam_warmup: int = LAM_WARMUP  # steps at BACKGROUND_WEIGHT before lam applies
    ema_alpha: float = 0.01  # the smallest rate of the ramp (see semi.ema_rate)
    ema_schedule: str = "ramp"
    average_last: float = 1 / 3  # supervised runs: the fraction of steps weights are averaged
    unlabelled_weight: float = 1.0  # 0: the EMA teacher without pseudo-labels (a weight average)
    unlabelled_rampup: int = 100  # co-training steps to ramp the consistency weight up
    pseudo_labels: str = "soft"  # or "peaks" (see semi.PSEUDO_LABELS)
    auto_thresholds: bool = True  # choose per-class thresholds on the labelled data at the end
    threshold_beta: float = CZII_BETA
    multi_view: bool = True
    dropblock: bool = True
    drop_rate: float = 0.1


#: Crop side on a machine without a GPU (the dock's and the CLI's default there): on the
#: czii-20A benchmark crops of 96 scored as crops of 64 at 2000 steps (CZII 0.740+-0.019
#: against 0.740+-0.008, two seeds) and cost 1.6x the time a step.
CPU_CROP = 64


def default_crop(device: str) -> int:
    """The training crop side for ``device`` (auto, cpu, cuda...): :data:`CPU_CROP` on a
    CPU, ``TrainConfig.crop`` on an accelerator."""
    return CPU_CROP if resolve_device(device).type == "cpu" else TrainConfig.crop


#: The settings a continued model keeps from its card's ``train_config`` unless the user
#: sets them: the loss's and the optimiser's, which make the continued run the same run.
CONTINUED_SETTINGS = ("lr", "lam", "lam_warmup", "ema_alpha", "ema_schedule", "pseudo_labels",
                      "unlabelled_weight", "unlabelled_rampup", "average_last")


def setting(name: str, chosen: Any, continued: ModelCard | None = None) -> Any:
    """The value of the training setting ``name``: ``chosen`` if the user set one (not
    None); else, for a :data:`CONTINUED_SETTINGS` one, the value a ``continued`` model was
    trained with (its card's ``train_config``); else ``TrainConfig``'s default."""
    if chosen is not None:
        return chosen
    trained_with = continued.history.get("train_config", {}) if continued is not None else {}
    if name in CONTINUED_SETTINGS and name in trained_with:
        return trained_with[name]
    return getattr(TrainConfig, name)


def learning_rate(chosen: float | None, fine_tune: bool = False,
                  continued: ModelCard | None = None) -> float:
    """The rate to train at: ``chosen`` if the user set one; else fine-tuning's
    (:data:`FINE_TUNE_LR`), or as :func:`setting` says (a continued model's own rate, or
    training's default)."""
    if chosen is None and fine_tune:
        return FINE_TUNE_LR
    return float(setting("lr", chosen, continued))


@dataclass
class TrainProgress:
    """One step's report to whoever watches (tqdm, a napari progress bar, a log)."""

    step: int
    total_steps: int
    phase: str  # "burn-in" or "co-training"
    loss: float
    loss_unlabelled: float | None
    elapsed_s: float
    eta_s: float


@dataclass
class TrainResult:
    steps_done: int
    stopped: bool
    reason: str
    losses: list[float] = field(default_factory=list)

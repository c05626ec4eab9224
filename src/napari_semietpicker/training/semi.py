"""Semi-supervised pieces: the EMA teacher and multi-view pseudo-labels (paper 2.3)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..model.heatmap import find_peaks, render_targets


@contextmanager
def batchnorm_statistics_frozen(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers normalise by batch but leave their running stats.

    The student's forward pass on strong views (noise, blur, DropBlock) must not move the
    running statistics that prediction uses: those would then describe occluded, noisier
    crops than any real tomogram, and the EMA teacher would inherit them. Measured on the
    ablation, letting them move made DropBlock collapse whole classes on some seeds.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


#: Teacher update schedules: ``ramp`` lets the teacher follow early, ``constant`` is the
#: paper's fixed rate.
EMA_SCHEDULES = ("ramp", "constant")


def ema_rate(cotrain_step: int, alpha: float, schedule: str = "ramp") -> float:
    """The EMA rate a of co-training step ``cotrain_step`` (0 = the first).

    ``ramp`` is Mean Teacher's ``min(1 - 1/(t+1), alpha_max)`` in this repo's convention
    (theta_t <- (1 - a) theta_t + a theta_s): ``a_t = max(1/(t+1), alpha)``. Until
    ``1/alpha`` steps the teacher is the plain average of the student's weights over
    co-training (after the first step it equals the student), then an EMA of rate
    ``alpha``. A fixed small rate instead leaves the teacher mostly burn-in weights for
    ``1/alpha`` steps: at 1e-3, 82 % after 200 steps, so short runs gained nothing.
    """
    if schedule not in EMA_SCHEDULES:
        raise ValueError(f"EMA schedule must be one of {', '.join(EMA_SCHEDULES)}, "
                         f"got {schedule!r}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EMA rate must be in (0, 1], got {alpha}")
    return max(1.0 / (cotrain_step + 1), alpha) if schedule == "ramp" else alpha


def unlabelled_weight_factor(cotrain_step: int, rampup_steps: int) -> float:
    """Ramp-up of the consistency loss weight, ``exp(-5 (1 - t/T)^2)`` (Laine and Aila's
    sigmoid ramp, used by Mean Teacher), 1 from step ``T`` on; ``T = 0`` means no ramp.

    Early pseudo-labels are the burn-in model's, its errors included: they should steer
    the student less than the labels until the teacher has moved.
    """
    if rampup_steps <= 0 or cotrain_step >= rampup_steps:
        return 1.0
    progress = max(0.0, cotrain_step / rampup_steps)
    return float(np.exp(-5.0 * (1.0 - progress) ** 2))


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace the BatchNorm running statistics by those of ``model``'s own weights on
    ``batches`` (equal-weight average over the batches; ``torch.optim.swa_utils.update_bn``).

    An EMA teacher's statistics are the EMA of its students' statistics, which do not
    describe the activations of its averaged weights (SWA's known pitfall). Measured on the
    czii-20A benchmark (2 labelled tomograms, 2000 + 1000 steps, seeds 0 and 1), recomputing
    them on training crops of the labelled tomograms moved the co-trained teachers from CZII
    0.730 and 0.739 to 0.818 and 0.791, mean F1 from 0.499 and 0.497 to 0.542 and 0.541. A
    supervised model's own statistics are its students': recomputing them did not help.
    """
    torch.optim.swa_utils.update_bn(batches, model)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """theta_t <- (1 - alpha) theta_t + alpha theta_s, for weights and BN statistics.

    Integer buffers (BatchNorm's batch counter) are copied from the student.
    """
    student_state = student.state_dict()
    for name, value in teacher.state_dict().items():
        source = student_state[name]
        if value.dtype.is_floating_point:
            value.mul_(1.0 - alpha).add_(source.detach(), alpha=alpha)
        else:
            value.copy_(source)


#: Pseudo-label kinds: ``soft`` is the paper's averaged teacher heatmap; ``peaks`` keeps
#: the teacher's confident peaks only, re-drawn as the unit Gaussians labels are made of.
PSEUDO_LABELS = ("soft", "peaks")

#: In ``peaks`` pseudo-labels, a peak scoring at least this fraction of its class's
#: confident threshold (but below it) is unsure: its sphere is left unknown.
UNSURE_FRACTION = 0.5

#: A Gaussian target falls to this value at the particle's radius (two sigma).
_AT_RADIUS = float(np.exp(-2.0))


@torch.no_grad()
def peak_pseudo_labels(heat: torch.Tensor, kernels: list[int], sigmas: np.ndarray,
                       confident: np.ndarray) -> torch.Tensor:
    """Hard pseudo-labels from a teacher heatmap (B, C, D, H, W) on the output grid.

    Each class's peaks at or above ``confident[c]`` become unit Gaussians of the class's
    ``sigmas[c]`` (as labels are drawn); the spheres of unsure peaks (from
    :data:`UNSURE_FRACTION` of the threshold up) are NaN, unknown to the loss, unless a
    confident particle's sphere covers them; everything else is background (0).
    FixMatch's confidence rule for heatmaps: a soft target would teach the student the
    teacher's hedged, lower peaks and its background haze as if they were the truth.
    """
    depth, height, width = heat.shape[2:]
    shape = (depth, height, width)
    target = np.zeros(heat.shape, dtype=np.float32)
    for b in range(heat.shape[0]):
        for c in range(heat.shape[1]):
            positions, scores = find_peaks(heat[b, c].float(), kernels[c],
                                           UNSURE_FRACTION * float(confident[c]))
            sure = scores >= confident[c]
            drawn, unsure = (render_targets(positions[kept], np.zeros(int(kept.sum()), int),
                                            shape, sigmas[c:c + 1])[0]
                             for kept in (sure, ~sure))
            drawn[(unsure >= _AT_RADIUS) & (drawn < _AT_RADIUS)] = np.nan
            target[b, c] = drawn
    return torch.from_numpy(target).to(heat.device)

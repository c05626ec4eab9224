"""Semi-supervised pieces: the EMA teacher and multi-view pseudo-labels (paper 2.3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: The weak views of the teacher: the crop itself and its flips along z, y and x.
FLIP_VIEWS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


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


@torch.no_grad()
def predict_views(model: nn.Module, image: torch.Tensor,
                  views: tuple[tuple[int, ...], ...] = FLIP_VIEWS) -> torch.Tensor:
    """Average of the model's outputs over flipped views, each flipped back first.

    With ``views=((),)`` this is a plain forward pass. Flips are exact on the stride-2
    output because crop sides are even (see ``augment.random_flip_rot``).
    """
    return predict_views_with_spread(model, image, views)[0]


@torch.no_grad()
def predict_views_with_spread(model: nn.Module, image: torch.Tensor,
                              views: tuple[tuple[int, ...], ...] = FLIP_VIEWS
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean of the flipped views (as :func:`predict_views`) and their standard deviation
    per voxel (None for a single view): how much the views disagree, for review."""
    total = squares = None
    for dims in views:
        out = model(image.flip(dims) if dims else image)
        out = (out.flip(dims) if dims else out).float()
        total = out if total is None else total + out
        if len(views) > 1:
            squares = out * out if squares is None else squares + out * out
    mean = total / len(views)
    spread = None if squares is None else (squares / len(views) - mean * mean).clamp_min(0).sqrt()
    return mean, spread

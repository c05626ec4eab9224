"""The model's prediction averaged over flipped views (paper 2.3): the EMA teacher's weak
views for pseudo-labels, and test-time augmentation when picking (whose spread between
views ranks picks for review)."""

from __future__ import annotations

import torch
from torch import nn

#: The weak views of the teacher: the crop itself and its flips along z, y and x.
FLIP_VIEWS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


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
    if total is None:
        raise ValueError("predict_views needs at least one view (use ((),) for a plain pass)")
    mean = total / len(views)
    spread = None if squares is None else (squares / len(views) - mean * mean).clamp_min(0).sqrt()
    return mean, spread

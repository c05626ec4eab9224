"""The reweighted MSE heatmap loss of the paper (section 2.2)."""

from __future__ import annotations

import torch


def reweighted_mse(pred: torch.Tensor, target: torch.Tensor, lam: float = 4.0,
                   eps: float = 1e-6) -> torch.Tensor:
    """sum(Y (P-Y)^2)/(sum Y + eps) + lam * sum((1-Y)(P-Y)^2)/(sum(1-Y) + eps).

    Computed per class over batch and space (so rare classes are not drowned by
    frequent ones), then averaged over classes. ``pred`` and ``target`` are (B, C, ...).
    Target voxels that are NaN are unknown (partial labels) and count in neither sum.
    """
    pred = pred.float()
    target = target.float()
    known = (~torch.isnan(target)).float()
    target = torch.nan_to_num(target, nan=0.0)
    dims = [0, *range(2, pred.ndim)]
    err = (pred - target) ** 2
    positive = (target * err).sum(dims) / (target.sum(dims) + eps)
    background = (1 - target) * known
    negative = (background * err).sum(dims) / (background.sum(dims) + eps)
    return (positive + lam * negative).mean()

"""Whole-tomogram prediction: sliding windows, Gaussian blending, flips, cached peaks.

The heatmap is accumulated on the output grid (stride 2), on the compute device; peaks
are found there and only they come back to the host. Candidate peaks above a low
floor are kept with their scores, so a threshold change is a filter, not a recompute.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..compute import PRECISIONS, autocast
from ..geometry import (
    Grid,
    output_to_input,
    plan_axis,
    resample,
    same_voxel_size,
    window_multiple,
)
from ..io.picks import empty_picks, picks_from_positions
from ..io.tomogram import Tomogram, normalize
from ..model.checkpoint import ModelCard
from ..model.heatmap import NMS_REACH, find_peaks, nms_kernels
from ..model.network import SIZE_MULTIPLE, AsymmetricUNet3D, channels_last, fold_batch_norms
from ..model.views import FLIP_VIEWS, predict_views_with_spread

log = logging.getLogger(__name__)

#: Peaks below this score are never kept: the lowest threshold a user can choose.
PEAK_FLOOR = 0.05
#: Resampling a tomogram to the model's voxel size by more than this factor (either way)
#: is refused: far beyond it the voxel size is wrong rather than the model's binning.
MAX_RESAMPLING = 16.0


@dataclass
class PredictConfig:
    """Sliding-window settings. ``window`` is in input voxels (rounded to a multiple of 32).

    The defaults cover a CZII axis (630 voxels, padded to 640) with two 352-voxel windows
    that overlap by 64 voxels: the same 64-voxel seams as 256-voxel windows at overlap 0.25,
    with 1.2x fewer voxels computed (three windows per axis there); a tomogram binned 2x
    (315 voxels) is one window, computed once. ``precision``: ``fp32``, ``bf16`` or ``auto``
    (:func:`.compute.resolve_precision`). ``tta``: average the four flip views (on by
    default: on the realistic quality benchmark they raised the CZII score of all four
    trained models, 0.741 -> 0.773 on average, for 4x the network's time), and keep their
    spread for the review queue.
    """

    window: int = 352
    overlap: float = 0.18
    tta: bool = True
    batch_size: int = 1
    precision: str = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose "
                             f"{', '.join(PRECISIONS)}")


def gaussian_weights(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Blending weights, highest at a window's centre (sigma = 1/8 side, as nnU-Net)."""
    axes = []
    for n in shape:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        axes.append(torch.exp(-(x**2) / (2 * (n / 8) ** 2)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp_min(1e-3)


def predict_heatmaps(model: AsymmetricUNet3D, volume: np.ndarray | torch.Tensor,
                     config: PredictConfig | None = None,
                     device: torch.device | str = "cpu",
                     on_progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Heatmaps (C, ceil(D/2), ceil(H/2), ceil(W/2)) of a normalised volume (z, y, x).

    Windows stream from the host volume to the device one batch at a time; the volume is
    padded (reflect) to a multiple of 32 (and of the stride) window by window
    (:func:`read_window`), so the volume is never copied whole. Window starts are multiples
    of both, so each window's output lands on whole voxels of the output grid, whose voxel
    ``i`` is centred at input index ``(i + 0.5) * stride - 0.5`` (:mod:`.geometry`).
    """
    return predict_heatmaps_with_spread(model, volume, config, device, on_progress,
                                        should_stop)[0]


@torch.no_grad()
def predict_heatmaps_with_spread(model: AsymmetricUNet3D, volume: np.ndarray | torch.Tensor,
                                 config: PredictConfig | None = None,
                                 device: torch.device | str = "cpu",
                                 on_progress: Callable[[int, int], None] | None = None,
                                 should_stop: Callable[[], bool] | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Heatmaps as :func:`predict_heatmaps` and, with test-time flips, the standard
    deviation of the flip views per voxel, blended the same way (else None)."""
    config = config or PredictConfig()
    device = torch.device(device)
    stride = model.config.output_stride
    volume = torch.as_tensor(np.asarray(volume, dtype=np.float32)) \
        if not isinstance(volume, torch.Tensor) else volume.float()
    shape = np.array(volume.shape)
    multiple = window_multiple(SIZE_MULTIPLE, stride)
    padded = np.maximum(shape, multiple)
    padded = -(-padded // multiple) * multiple
    window = max(multiple, config.window // multiple * multiple)
    plans = [plan_axis(int(n), window, config.overlap, multiple) for n in padded]
    win = np.array([side for side, _ in plans])
    out_shape = tuple(int(s) for s in padded // stride)
    out_win = tuple(int(s) for s in win // stride)
    heat = torch.zeros((model.config.n_classes, *out_shape), dtype=torch.float32, device=device)
    weight_sum = torch.zeros(out_shape, dtype=torch.float32, device=device)
    spread = torch.zeros_like(heat) if config.tta else None
    weights = gaussian_weights(out_win, device)
    views = FLIP_VIEWS if config.tta else ((),)
    starts = list(itertools.product(*(axis_starts for _, axis_starts in plans)))
    model = fold_batch_norms(model)
    if config.channels_last:
        model = channels_last(model)
    layout = torch.channels_last_3d if config.channels_last else torch.contiguous_format
    for first in range(0, len(starts), config.batch_size):
        if should_stop is not None and should_stop():
            raise InterruptedError("prediction stopped")
        batch_starts = starts[first:first + config.batch_size]
        batch = torch.stack([read_window(volume, start, win) for start in batch_starts])[:, None]
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=layout)
        with autocast(config.precision, device):
            out, out_spread = predict_views_with_spread(model, batch, views)  # float32
        for i, ((z, y, x), pred) in enumerate(zip(batch_starts, out)):
            oz, oy, ox = z // stride, y // stride, x // stride
            region = (slice(oz, oz + out_win[0]), slice(oy, oy + out_win[1]),
                      slice(ox, ox + out_win[2]))
            heat[(slice(None),) + region] += pred * weights
            if spread is not None and out_spread is not None:
                spread[(slice(None),) + region] += out_spread[i] * weights
            weight_sum[region] += weights
        if on_progress is not None:
            on_progress(min(first + config.batch_size, len(starts)), len(starts))
    heat /= weight_sum
    keep = (slice(None),) + tuple(slice(0, int(-(-s // stride))) for s in shape)
    if spread is not None:
        spread = (spread / weight_sum)[keep]
    return heat[keep], spread


def reflect_index(index: torch.Tensor, length: int) -> torch.Tensor:
    """Indices past the end of an axis mirrored back into it, as ``np.pad(mode="reflect")``
    does (the edge voxel not repeated; periodic for pads longer than the axis)."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index % period
    return torch.where(index > length - 1, period - index, index)


def read_window(volume: torch.Tensor, start: Sequence[int],
                side: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The window of ``side`` voxels at ``start`` of ``volume`` reflect-padded past its end:
    the window of the padded volume, read without padding (copying) the whole volume.

    Past the end it reflects with one ``F.pad`` of the window's slice (a fast copy); an
    axis padded by as much as its length (tiny volumes) is mirrored by index instead.
    """
    start, side = [int(s) for s in start], [int(n) for n in side]
    window = volume
    offsets, past_end, periodic = [0, 0, 0], [0, 0, 0], []
    for axis, (s, n) in enumerate(zip(start, side)):
        length = volume.shape[axis]
        past = s + n - length
        if past <= 0:
            window = window.narrow(axis, s, n)  # a view
        elif past < length:  # reflect from the slice that the padding mirrors
            first = min(s, length - 1 - past)
            window = window.narrow(axis, first, length - first)
            offsets[axis], past_end[axis] = s - first, past
        else:
            periodic.append(axis)
    if any(past_end):
        pad = [0, past_end[2], 0, past_end[1], 0, past_end[0]]
        window = F.pad(window[None, None], pad, mode="reflect")[0, 0]
        for axis in range(3):
            if past_end[axis]:
                window = window.narrow(axis, offsets[axis], side[axis])
    for axis in periodic:  # copies only the window's voxels, the other axes cut first
        index = reflect_index(torch.arange(start[axis], start[axis] + side[axis],
                                           device=volume.device), volume.shape[axis])
        window = window.index_select(axis, index)
    return window


@dataclass
class PeakCache:
    """All candidate peaks of one tomogram with scores: thresholds filter them at once."""

    tomogram: str
    picks: pd.DataFrame  # experiment, particle_type, x, y, z (Angstrom), score
    heatmap_grid: Grid | None = None  # where the heatmaps lie (for layers and MRC files)

    def at(self, thresholds: float | dict[str, float]) -> pd.DataFrame:
        """Picks whose score reaches the threshold of their class (or one for all)."""
        limit: np.ndarray | float
        if isinstance(thresholds, dict):
            limit = self.picks["particle_type"].map(thresholds).fillna(np.inf).to_numpy()
        else:
            limit = float(thresholds)
        return self.picks[self.picks["score"].to_numpy() >= limit].reset_index(drop=True)


def peaks_from_heatmaps(heat: torch.Tensor, card: ModelCard, tomogram: str,
                        grid: Grid | None = None, floor: float = PEAK_FLOOR,
                        volume_shape: Sequence[int] | None = None,
                        spread: torch.Tensor | None = None,
                        nms_reach: float = NMS_REACH) -> PeakCache:
    """Max-pool NMS per class on the heatmaps, mapped to Angstrom of the tomogram's frame.

    ``grid`` is the grid of the volume the network saw (default: the model's voxel size
    from the corner); the heatmap lies on it made ``output_stride`` times coarser.
    With ``spread`` (the flip views' standard deviation) each peak also gets its value
    there, in a ``view_spread`` column: no recomputation is needed to rank picks for review.
    ``nms_reach``: the NMS window's reach each way, as a fraction of the class radius.
    """
    grid = Grid(card.voxel_size) if grid is None else grid
    stride = card.model.output_stride
    kernels = nms_kernels(card.classes, grid.voxel_size, stride, nms_reach)
    tables = []
    for c, cls in enumerate(card.classes):
        positions, scores = find_peaks(heat[c], kernels[c], floor)
        spreads = None if spread is None else values_at(spread[c], positions)
        zyx = output_to_input(positions, stride)
        if volume_shape is not None:
            zyx = np.clip(zyx, 0, np.asarray(volume_shape) - 1)
        if len(zyx):
            table = picks_from_positions(grid.to_angstrom(zyx), tomogram, cls.name, scores)
            if spreads is not None:
                table["view_spread"] = spreads
            tables.append(table)
    if not tables:
        table = empty_picks()
        table["score"] = pd.Series(dtype=float)
    else:
        table = pd.concat(tables, ignore_index=True)
    return PeakCache(tomogram, table)


def model_grid(tomogram: Tomogram, model_voxel_size: float) -> tuple[Grid, float]:
    """The grid a model at ``model_voxel_size`` sees this tomogram on, and the resampling
    factor (1: none, the voxel sizes being the same by :func:`.geometry.same_voxel_size`)."""
    if same_voxel_size(tomogram.voxel_size, model_voxel_size):
        return tomogram.grid, 1.0
    factor = model_voxel_size / tomogram.voxel_size
    return tomogram.grid.coarser(factor), factor


def values_at(grid: torch.Tensor, positions: np.ndarray) -> np.ndarray:
    """Values of a (D, H, W) grid at fractional grid positions (N, 3), nearest voxel."""
    index = np.clip(np.rint(positions).astype(int), 0, np.asarray(grid.shape) - 1)
    return grid[tuple(torch.as_tensor(index.T, device=grid.device))].float().cpu().numpy()


def rescale_to_model(tomogram: Tomogram, model_voxel_size: float) -> tuple[np.ndarray, Grid]:
    """The raw volume resampled to the model's voxel size when they differ, and its grid.

    Coarsening averages voxels (exactly mean binning for whole factors, as ``--level``
    does for training); finer grids are interpolated (:func:`.geometry.resample`). Normalise
    afterwards, as training does after binning: averaging lowers the noise, and a model fed
    a volume normalised before it sees too little contrast and finds nothing. A coarser
    model (trained on binned data) is binned inference, said at INFO level; a finer one
    means upsampling the tomogram, which is slow and seldom meant: a warning.
    """
    grid, factor = model_grid(tomogram, model_voxel_size)
    if factor == 1.0:
        return tomogram.data, grid
    if not 1 / MAX_RESAMPLING <= factor <= MAX_RESAMPLING:
        raise ValueError(
            f"{tomogram.label}: voxel size {tomogram.voxel_size:.3g} A is "
            f"{max(factor, 1 / factor):.3g}x the model's {model_voxel_size:.3g} A (at most "
            f"{MAX_RESAMPLING:g}x is resampled); check the header's voxel size or give it "
            "with --voxel-size")
    log.log(logging.INFO if factor > 1 else logging.WARNING,
            "%s: voxel size %.3g A differs from the model's %.3g A; resampling the tomogram",
            tomogram.name, tomogram.voxel_size, model_voxel_size)
    with warnings.catch_warnings():  # a read-only memory map: only read, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return resample(tomogram.data, factor), grid


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA, MPS and host allocation failures (torch raises several types)."""
    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def smaller_for_memory(config: PredictConfig) -> PredictConfig | None:
    """The next setting to try after running out of memory: fewer, then smaller windows."""
    if config.batch_size > 1:
        return replace(config, batch_size=config.batch_size // 2)
    if config.window > 2 * SIZE_MULTIPLE:
        return replace(config, window=max(2 * SIZE_MULTIPLE,
                                          config.window // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE))
    return None


def pick_tomogram(model: AsymmetricUNet3D, card: ModelCard, tomogram: Tomogram,
                  config: PredictConfig | None = None, device: torch.device | str = "cpu",
                  on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None
                  ) -> tuple[PeakCache, torch.Tensor]:
    """Normalise, resample to the model's voxel size if needed, predict, find peaks.

    Out of memory, it retries with fewer windows per batch, then smaller windows, and
    says so. Returns the peak cache (positions in Angstrom of the tomogram's own frame,
    whatever the model's voxel size) and the heatmaps on the model's (possibly resampled)
    output grid, which is ``peaks.heatmap_grid``.
    """
    config = config or PredictConfig()
    raw, grid = rescale_to_model(tomogram, card.voxel_size)
    # One float32 volume in memory: a resampled one is ours, normalised where it lies.
    volume = normalize(raw, name=tomogram.label, copy=raw is tomogram.data)
    while True:
        try:
            heat, spread = predict_heatmaps_with_spread(model, volume, config, device,
                                                        on_progress, should_stop)
            break
        except Exception as err:
            smaller = smaller_for_memory(config) if is_out_of_memory(err) else None
            if smaller is None:
                raise
            log.warning("%s: out of memory with %d window(s) of %d voxels; retrying with %d "
                        "of %d", tomogram.name, config.batch_size, config.window,
                        smaller.batch_size, smaller.window)
            config = smaller
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if not bool(torch.isfinite(heat).all()):
        raise ValueError(f"{tomogram.label}: the model's heatmaps hold NaN or infinite values; "
                         "its weights are unusable (retrain, or load another model)")
    peaks = peaks_from_heatmaps(heat, card, tomogram.name, grid, volume_shape=volume.shape,
                                spread=spread)
    peaks.heatmap_grid = grid.coarser(card.model.output_stride)
    return peaks, heat

"""Whole-tomogram prediction: sliding windows, Gaussian blending, flips, cached peaks.

The heatmap is accumulated on the output grid (stride 2), on the compute device; peaks
are found there and only they come back to the host. Candidate peaks above a low
floor are kept with their scores, so a threshold change is a filter, not a recompute.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .checkpoint import ModelCard
from .compute import PRECISIONS, autocast
from .heatmap import find_peaks, nms_kernels, output_to_input
from .io.picks import empty_picks, picks_from_positions
from .io.tomogram import Tomogram, normalize, same_voxel_size
from .model import SIZE_MULTIPLE
from .semi import FLIP_VIEWS, predict_views

log = logging.getLogger(__name__)

#: Peaks below this score are never kept: the lowest threshold a user can choose.
PEAK_FLOOR = 0.05


@dataclass
class PredictConfig:
    """Sliding-window settings. ``window`` is in input voxels (rounded to a multiple of 32).

    ``precision``: ``fp32``, ``bf16`` or ``auto`` (:func:`.compute.resolve_precision`).
    """

    window: int = 256
    overlap: float = 0.25
    tta: bool = False
    batch_size: int = 1
    precision: str = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose "
                             f"{', '.join(PRECISIONS)}")


def plan_axis(length: int, window: int, overlap: float) -> tuple[int, list[int]]:
    """Window side and starts along one axis: the fewest windows that keep ``overlap``.

    ``length`` is a multiple of 32. An axis no longer than the window is one window;
    otherwise the window shrinks to the smallest multiple of 32 that still covers the
    axis with that many windows, which cuts the voxels computed twice.
    """
    if length <= window:
        return length, [0]
    count = math.ceil((length - window * overlap) / (window * (1 - overlap)))
    side = SIZE_MULTIPLE * math.ceil(length / (count - (count - 1) * overlap) / SIZE_MULTIPLE)
    side = min(side, window)
    step = (length - side) / (count - 1)
    return side, sorted({int(round(i * step)) for i in range(count)})


def gaussian_weights(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Blending weights, highest at a window's centre (sigma = 1/8 side, as nnU-Net)."""
    axes = []
    for n in shape:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        axes.append(torch.exp(-(x**2) / (2 * (n / 8) ** 2)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp_min(1e-3)


@torch.no_grad()
def predict_heatmaps(model: torch.nn.Module, volume: np.ndarray | torch.Tensor,
                     config: PredictConfig | None = None,
                     device: torch.device | str = "cpu",
                     on_progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """Heatmaps (C, ceil(D/2), ceil(H/2), ceil(W/2)) of a normalised volume (z, y, x).

    Windows stream from the host volume to the device one batch at a time; the volume is
    padded (reflect) to a multiple of 32 where it is smaller than a window, window by
    window (:func:`read_window`), so the volume is never copied whole.
    """
    config = config or PredictConfig()
    device = torch.device(device)
    stride = model.config.output_stride
    volume = torch.as_tensor(np.asarray(volume, dtype=np.float32)) \
        if not isinstance(volume, torch.Tensor) else volume.float()
    shape = np.array(volume.shape)
    padded = np.maximum(shape, SIZE_MULTIPLE)
    padded = -(-padded // SIZE_MULTIPLE) * SIZE_MULTIPLE
    window = max(SIZE_MULTIPLE, config.window // SIZE_MULTIPLE * SIZE_MULTIPLE)
    plans = [plan_axis(int(n), window, config.overlap) for n in padded]
    win = np.array([side for side, _ in plans])
    out_shape = tuple(int(s) for s in padded // stride)
    out_win = tuple(int(s) for s in win // stride)
    heat = torch.zeros((model.config.n_classes, *out_shape), dtype=torch.float32, device=device)
    weight_sum = torch.zeros(out_shape, dtype=torch.float32, device=device)
    weights = gaussian_weights(out_win, device)
    views = FLIP_VIEWS if config.tta else ((),)
    starts = list(itertools.product(*(axis_starts for _, axis_starts in plans)))
    model.eval()
    # channels-last convolutions are markedly faster on CPUs (oneDNN) and tensor cores.
    layout = torch.channels_last_3d if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    for first in range(0, len(starts), config.batch_size):
        if should_stop is not None and should_stop():
            raise InterruptedError("prediction stopped")
        batch_starts = starts[first:first + config.batch_size]
        batch = torch.stack([read_window(volume, start, win) for start in batch_starts])[:, None]
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=layout)
        with autocast(config.precision, device):
            out = predict_views(model, batch, views)  # float32 whatever the precision
        for (z, y, x), pred in zip(batch_starts, out):
            oz, oy, ox = z // stride, y // stride, x // stride
            region = (slice(oz, oz + out_win[0]), slice(oy, oy + out_win[1]),
                      slice(ox, ox + out_win[2]))
            heat[(slice(None), *region)] += pred * weights
            weight_sum[region] += weights
        if on_progress is not None:
            on_progress(min(first + config.batch_size, len(starts)), len(starts))
    heat /= weight_sum
    keep = tuple(slice(0, int(-(-s // stride))) for s in shape)
    return heat[(slice(None), *keep)]


def reflect_index(index: torch.Tensor, length: int) -> torch.Tensor:
    """Indices past the end of an axis mirrored back into it, as ``np.pad(mode="reflect")``
    does (the edge voxel not repeated; periodic for pads longer than the axis)."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index % period
    return torch.where(index > length - 1, period - index, index)


def read_window(volume: torch.Tensor, start: Sequence[int], side: Sequence[int]) -> torch.Tensor:
    """The window of ``side`` voxels at ``start`` of ``volume`` reflect-padded past its end:
    the window of the padded volume, read without padding (copying) the whole volume."""
    start, side = [int(s) for s in start], [int(n) for n in side]
    window = volume
    past_end = []
    for axis, (s, n) in enumerate(zip(start, side)):
        if s + n <= volume.shape[axis]:
            window = window.narrow(axis, s, n)  # a view
        else:
            past_end.append(axis)
    for axis in past_end:  # copies only the window's voxels, the other axes cut first
        index = reflect_index(torch.arange(start[axis], start[axis] + side[axis],
                                           device=volume.device), volume.shape[axis])
        window = window.index_select(axis, index)
    return window


@dataclass
class PeakCache:
    """All candidate peaks of one tomogram with scores: thresholds filter them at once."""

    tomogram: str
    picks: pd.DataFrame  # experiment, particle_type, x, y, z (Angstrom), score

    def at(self, thresholds: float | dict[str, float]) -> pd.DataFrame:
        """Picks whose score reaches the threshold of their class (or one for all)."""
        if isinstance(thresholds, dict):
            limit = self.picks["particle_type"].map(thresholds).fillna(np.inf).to_numpy()
        else:
            limit = float(thresholds)
        return self.picks[self.picks["score"].to_numpy() >= limit].reset_index(drop=True)


def peaks_from_heatmaps(heat: torch.Tensor, card: ModelCard, tomogram: str,
                        voxel_size: float | None = None, floor: float = PEAK_FLOOR,
                        volume_shape: Sequence[int] | None = None) -> PeakCache:
    """Max-pool NMS per class on the heatmaps, mapped to Angstrom positions.

    ``voxel_size`` is the size of the voxels the heatmap was computed on (the model's).
    """
    voxel_size = card.voxel_size if voxel_size is None else voxel_size
    stride = card.model.output_stride
    kernels = nms_kernels(card.classes, voxel_size, stride)
    tables = []
    for c, cls in enumerate(card.classes):
        positions, scores = find_peaks(heat[c], kernels[c], floor)
        zyx = output_to_input(positions, stride)
        if volume_shape is not None:
            zyx = np.clip(zyx, 0, np.asarray(volume_shape) - 1)
        if len(zyx):
            tables.append(picks_from_positions(zyx * voxel_size, tomogram, cls.name, scores))
    if not tables:
        table = empty_picks()
        table["score"] = pd.Series(dtype=float)
    else:
        table = pd.concat(tables, ignore_index=True)
    return PeakCache(tomogram, table)


def rescale_to_model(volume: np.ndarray, voxel_size: float, model_voxel_size: float,
                     name: str) -> np.ndarray:
    """Resample a raw volume to the model's voxel size when they differ (else return it).

    Coarsening averages voxels (``area``: exactly mean binning for whole factors), as
    ``--level`` does for training; finer grids are interpolated (trilinear). Normalise
    afterwards, as training does after binning: averaging lowers the noise, and a model fed
    a volume normalised before it sees too little contrast and finds nothing. A coarser
    model (trained on binned data) is binned inference, said at INFO level; a finer one
    means upsampling the tomogram, which is slow and seldom meant: a warning.
    """
    if same_voxel_size(voxel_size, model_voxel_size):
        return volume
    ratio = voxel_size / model_voxel_size
    log.log(logging.INFO if ratio < 1 else logging.WARNING,
            "%s: voxel size %.3g A differs from the model's %.3g A; resampling the tomogram",
            name, voxel_size, model_voxel_size)
    new_shape = [max(SIZE_MULTIPLE, int(round(s * ratio))) for s in volume.shape]
    with warnings.catch_warnings():  # a read-only memory map: only read, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        grid = torch.from_numpy(np.asarray(volume, dtype=np.float32))[None, None]
    if ratio < 1:
        resized = F.interpolate(grid, size=new_shape, mode="area")
    else:
        resized = F.interpolate(grid, size=new_shape, mode="trilinear", align_corners=False)
    return resized[0, 0].numpy()


def to_tomogram_frame(picks: pd.DataFrame, model_voxel_size: float, model_shape: Sequence[int],
                      tomogram: Tomogram) -> pd.DataFrame:
    """Map picks found on a resampled grid back to the tomogram's own Angstrom frame.

    Resampling with ``align_corners=False`` keeps the volume's outer edges, so model
    voxel p sits at tomogram voxel (p + 0.5) * n / n' - 0.5 on each axis.
    """
    if tuple(model_shape) == tomogram.shape:
        return picks
    picks = picks.copy()
    for axis, column in enumerate(("z", "y", "x")):
        scale = tomogram.shape[axis] / model_shape[axis]
        model_index = picks[column].to_numpy(float) / model_voxel_size
        picks[column] = ((model_index + 0.5) * scale - 0.5) * tomogram.voxel_size
    return picks


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


def pick_tomogram(model: torch.nn.Module, card: ModelCard, tomogram: Tomogram,
                  config: PredictConfig | None = None, device: torch.device | str = "cpu",
                  on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None
                  ) -> tuple[PeakCache, torch.Tensor]:
    """Normalise, resample to the model's voxel size if needed, predict, find peaks.

    Out of memory, it retries with fewer windows per batch, then smaller windows, and
    says so. Returns the peak cache (positions in Angstrom of the tomogram's own frame)
    and the heatmaps on the model's (possibly resampled) output grid.
    """
    config = config or PredictConfig()
    raw = rescale_to_model(tomogram.data, tomogram.voxel_size, card.voxel_size, tomogram.name)
    # One float32 volume in memory: a resampled one is ours, normalised where it lies.
    volume = normalize(raw, name=tomogram.name, copy=raw is tomogram.data)
    while True:
        try:
            heat = predict_heatmaps(model, volume, config, device, on_progress, should_stop)
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
    peaks = peaks_from_heatmaps(heat, card, tomogram.name, card.voxel_size,
                                volume_shape=volume.shape)
    peaks.picks = to_tomogram_frame(peaks.picks, card.voxel_size, volume.shape, tomogram)
    return peaks, heat

"""Picking many tomograms: sharded across torchrun ranks, resumable, merged at the end.

Each tomogram's picks go to ``<out>.parts/<name>.csv`` as soon as it is done (atomic
write), so a re-run skips finished tomograms; a manifest ties the parts to the model
and thresholds that made them, and a change of either starts over. Rank 0 merges the
parts into ``out`` in the requested format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import distributed as dist
from .checkpoint import WEIGHTS, ModelCard
from .io.atomic import write_text_atomic
from .io.formats import write_picks
from .io.picks import empty_picks, read_picks_csv, write_picks_csv
from .io.tomogram import Tomogram, write_tomogram
from .model import AsymmetricUNet3D
from .predict import PredictConfig, pick_tomogram

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def parts_dir(out: str | Path) -> Path:
    return Path(str(out) + ".parts")


def _manifest(model_dir: Path, thresholds: float | dict[str, float]) -> dict:
    weights = model_dir / WEIGHTS
    return {"model": str(model_dir.resolve()), "weights_mtime_ns": weights.stat().st_mtime_ns,
            "weights_size": weights.stat().st_size, "thresholds": thresholds}


def _read_manifest(path: Path) -> dict | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _prepare_parts(parts: Path, manifest: dict, names: Sequence[str], overwrite: bool) -> None:
    """Rank 0 clears parts made by another model or thresholds; everyone waits.

    Only a folder holding our manifest is ours, and only the part files its manifest lists
    are removed, nothing else. A folder of that name without a manifest is refused, never
    deleted. The manifest lists the parts before any is written.
    """
    if dist.is_main():
        path = parts / MANIFEST
        if parts.exists() and not path.is_file():
            raise ValueError(f"{parts}: this folder exists and was not made by semietpicker "
                             f"(no {MANIFEST}); move it away or choose another --out")
        previous = (_read_manifest(path) or {}) if path.is_file() else None
        ours: list[str] = []
        if previous is not None:
            ours = previous.get("parts", [p.stem for p in parts.glob("*.csv")])
            settings = {k: v for k, v in previous.items() if k != "parts"}
            if overwrite or settings != manifest:
                for name in ours:
                    (parts / f"{name}.csv").unlink(missing_ok=True)
                ours = []
        parts.mkdir(parents=True, exist_ok=True)
        listed = list(dict.fromkeys([*ours, *names]))
        write_text_atomic(path, json.dumps({**manifest, "parts": listed}, indent=2))
    dist.barrier()


def predict_many(model: AsymmetricUNet3D, card: ModelCard, model_dir: str | Path,
                 tomograms: Sequence[Tomogram], out: str | Path,
                 thresholds: float | dict[str, float], config: PredictConfig | None = None,
                 device: torch.device | str = "cpu", overwrite: bool = False,
                 heatmaps_dir: str | Path | None = None,
                 progress: Callable[[Tomogram], Callable[[int, int], None] | None] | None = None,
                 write_options: dict | None = None) -> pd.DataFrame | None:
    """Pick ``tomograms`` (this rank's share), then merge everything into ``out`` on rank 0.

    Returns the merged table on rank 0 and None on the other ranks. ``progress`` gives a
    per-window callback for a tomogram (or None); ``write_options`` go to ``write_picks``.
    """
    names = [t.name for t in tomograms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several tomograms share the name(s) {', '.join(duplicates)}: "
                         "picks are keyed by tomogram name")
    parts = parts_dir(out)
    _prepare_parts(parts, _manifest(Path(model_dir), thresholds), names, overwrite)
    for tomogram in dist.shard(tomograms):
        part = parts / f"{tomogram.name}.csv"
        if part.is_file():
            log.info("rank %d: %s already picked, skipping", dist.rank(), tomogram.name)
            continue
        on_progress = progress(tomogram) if progress is not None else None
        peaks, heat = pick_tomogram(model, card, tomogram, config, device, on_progress)
        if heatmaps_dir is not None:
            grid = peaks.heatmap_grid
            assert grid is not None  # pick_tomogram always sets it
            origin = tuple(np.add(tomogram.origin_A, grid.offset_A))
            for c, cls in enumerate(card.classes):
                write_tomogram(Path(heatmaps_dir) / f"{tomogram.name}_{cls.name}.mrc",
                               heat[c].cpu().numpy().astype(np.float32), grid.voxel_size,
                               origin)
        write_picks_csv(peaks.at(thresholds), part)
        log.info("rank %d: picked %s", dist.rank(), tomogram.name)
    dist.barrier()
    if not dist.is_main():
        return None
    tables = [read_picks_csv(parts / f"{name}.csv") for name in names]
    merged = pd.concat(tables, ignore_index=True) if tables else empty_picks()
    write_picks(merged, out, keep_previous=True, **(write_options or {}))
    return merged

"""The parts of picking many tomograms (:func:`.pipeline.pick_into`): resumable, merged at the end.

Each tomogram's picks go to ``<out>.parts/<name>.csv`` as soon as it is done (atomic
write), so a re-run skips finished tomograms; a manifest ties the parts to the model
and thresholds that made them, and a change of either starts over. Rank 0 merges the
parts into ``out`` in the requested format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .. import distributed as dist
from ..io.atomic import write_text_atomic
from ..model.checkpoint import WEIGHTS

MANIFEST = "manifest.json"


def parts_dir(out: str | Path) -> Path:
    """The folder of a run's per-tomogram parts: ``<out>.parts``."""
    return Path(str(out) + ".parts")


def run_manifest(model_dir: Path, thresholds: float | dict[str, float]) -> dict:
    """What made a run's parts: the model (folder, weights' time and size) and thresholds."""
    weights = model_dir / WEIGHTS
    return {"model": str(model_dir.resolve()), "weights_mtime_ns": weights.stat().st_mtime_ns,
            "weights_size": weights.stat().st_size, "thresholds": thresholds}


def _read_manifest(path: Path) -> dict | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def prepare_parts(parts: Path, manifest: dict, names: Sequence[str], overwrite: bool) -> None:
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

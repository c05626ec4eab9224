"""Model directories: weights in safetensors plus a JSON config; loading runs no code.

Layout of a model directory::

    model.safetensors     weights used for prediction (the EMA teacher after co-training)
    config.json           classes, voxel size, network config, thresholds, version, history
    trainer_state.pt      optimiser, step, student weights: only to resume training;
                          loaded with ``torch.load(weights_only=True)``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .classes import ParticleClass, classes_from_dict, classes_to_dicts
from .io.atomic import atomic_path, write_text_atomic
from .model import AsymmetricUNet3D, ModelConfig, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"
FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """What a trained model knows about itself (the JSON beside its weights)."""

    classes: list[ParticleClass]
    voxel_size: float
    model: ModelConfig
    thresholds: dict[str, float] = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    package_version: str = __version__

    def threshold(self, name: str, default: float = 0.3) -> float:
        return float(self.thresholds.get(name, default))

    def class_thresholds(self) -> dict[str, float]:
        """The score threshold of every class (the model's, else the default)."""
        return {c.name: self.threshold(c.name) for c in self.classes}

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version,
            "classes": classes_to_dicts(self.classes),
            "voxel_size": self.voxel_size,
            "model": self.model.to_dict(),
            "thresholds": self.thresholds,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str) -> ModelCard:
        try:
            version = int(raw.get("format_version", 0))
            if version > FORMAT_VERSION:
                raise ValueError(f"model format {version} is newer than this package "
                                 f"understands ({FORMAT_VERSION}); upgrade napari-semietpicker")
            return cls(
                classes=[classes_from_dict(c) for c in raw["classes"]],
                voxel_size=float(raw["voxel_size"]),
                model=ModelConfig(**raw["model"]),
                thresholds={str(k): float(v) for k, v in raw.get("thresholds", {}).items()},
                history=dict(raw.get("history", {})),
                package_version=str(raw.get("package_version", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: invalid model config ({err})") from err


def save_model(model_dir: str | Path, model: torch.nn.Module, card: ModelCard) -> None:
    """Write weights and config atomically (each file is replaced whole or not at all)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(model_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "package": "napari-semietpicker"})
    write_text_atomic(model_dir / CONFIG, json.dumps(card.to_dict(), indent=2))


def load_card(model_dir: str | Path) -> ModelCard:
    """Read only the JSON config of a model directory."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no {CONFIG})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupted model config ({err})") from err
    return ModelCard.from_dict(raw, str(path))


def save_thresholds(model_dir: str | Path, thresholds: dict[str, float]) -> ModelCard:
    """Store per-class score thresholds in the model's config.json (atomically).

    ``semietpicker predict`` and the napari dock then pick with them by default, so
    thresholds tuned by eye on one tomogram carry over to the rest of the dataset.
    """
    card = load_card(model_dir)
    unknown = sorted(set(thresholds) - {c.name for c in card.classes})
    if unknown:
        raise ValueError(f"{model_dir}: the model has no class {', '.join(unknown)}")
    bad = {k: v for k, v in thresholds.items() if not 0.0 <= float(v) <= 1.0}
    if bad:
        raise ValueError(f"{model_dir}: thresholds must be between 0 and 1, got {bad}")
    card.thresholds.update({k: float(v) for k, v in thresholds.items()})
    write_text_atomic(Path(model_dir) / CONFIG, json.dumps(card.to_dict(), indent=2))
    return card


def load_model(model_dir: str | Path, device: torch.device | str = "cpu"
               ) -> tuple[AsymmetricUNet3D, ModelCard]:
    """Rebuild the network from config.json and load safetensors weights (no pickle)."""
    card = load_card(model_dir)
    path = Path(model_dir) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: missing weights file {WEIGHTS}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupted weights ({err})") from err
    model = build_model(card.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the network in {CONFIG} ({err})") from err
    return model.to(device).eval(), card


def save_trainer_state(model_dir: str | Path, state: dict) -> None:
    """Save what resuming needs (tensors, numbers, strings only) atomically."""
    with atomic_path(Path(model_dir) / TRAINER_STATE) as tmp:
        torch.save(state, tmp)


def load_trainer_state(model_dir: str | Path) -> dict | None:
    """The resume state, or None if there is none; never unpickles arbitrary objects."""
    path = Path(model_dir) / TRAINER_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad or unsafe files
        raise ValueError(f"{path}: cannot resume from this file ({err})") from err

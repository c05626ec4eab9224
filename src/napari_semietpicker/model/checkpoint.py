"""Model directories: weights in safetensors plus a JSON config; loading runs no code.

Layout of a model directory::

    model.safetensors     weights used for prediction (the EMA teacher after co-training)
    config.json           classes, voxel size, network config, thresholds, version, history
    trainer_state.pt      optimiser, step, student weights: only to resume training;
                          loaded with ``torch.load(weights_only=True)``

The folder changes as one unit: a new version is written into a temporary folder beside
it and swapped in with two renames, so a crash never leaves new weights beside an old
config. The config holds the SHA-256 of the weights, checked on loading, and is
validated against a schema (:class:`CardSchema`) before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..classes import ParticleClass, classes_from_dict, classes_to_dicts
from ..io.atomic import current_umask, new_file_mode, sweep_orphans, temp_prefix, write_text_atomic
from .network import AsymmetricUNet3D, ModelConfig, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"
FORMAT_VERSION = 1

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class ClassSchema(BaseModel):
    """One particle class as a model config stores it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    radius_A: FiniteFloat = Field(gt=0)
    weight: FiniteFloat = Field(1.0, ge=0)
    color: str = "#ffffff"


class CardSchema(BaseModel):
    """What a valid config.json holds: the one check of a model card where it is read."""

    model_config = ConfigDict(extra="ignore")
    format_version: int = Field(0, ge=0)
    package_version: str = "unknown"
    classes: list[ClassSchema] = Field(min_length=1)
    voxel_size: FiniteFloat = Field(gt=0, le=1e4)
    model: dict
    thresholds: dict[str, Annotated[FiniteFloat, Field(ge=0, le=1)]] = Field(default_factory=dict)
    history: dict = Field(default_factory=dict)
    weights_sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self) -> CardSchema:
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names {', '.join(duplicates)}")
        unknown = sorted(set(self.thresholds) - set(names))
        if unknown:
            raise ValueError(f"thresholds for unknown class(es) {', '.join(unknown)}")
        heads = self.model.get("n_classes")
        if heads != len(names):
            raise ValueError(f"the network has {heads} output channel(s) but {len(names)} "
                             "class(es) are listed")
        return self


def _validation_text(err: ValidationError) -> str:
    """A pydantic error as one line: ``where: what`` for each problem."""
    return "; ".join(
        (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + e["msg"]
        for e in err.errors())


@dataclass
class ModelCard:
    """What a trained model knows about itself (the JSON beside its weights)."""

    classes: list[ParticleClass]
    voxel_size: float
    model: ModelConfig
    thresholds: dict[str, float] = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    package_version: str = __version__
    weights_sha256: str | None = None

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
            **({"weights_sha256": self.weights_sha256} if self.weights_sha256 else {}),
        }

    @classmethod
    def from_dict(cls, raw: dict, source: str) -> ModelCard:
        """Validate ``raw`` (a parsed config.json) and build the card; errors name ``source``."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: invalid model config (expected a JSON object)")
        version = raw.get("format_version", 0)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ValueError(f"{source}: model format {version} is newer than this package "
                             f"understands ({FORMAT_VERSION}); upgrade napari-semietpicker")
        try:
            checked = CardSchema.model_validate(raw)
            return cls(
                classes=[classes_from_dict(c.model_dump()) for c in checked.classes],
                voxel_size=checked.voxel_size,
                model=ModelConfig(**checked.model),
                thresholds=dict(checked.thresholds),
                history=checked.history,
                package_version=checked.package_version,
                weights_sha256=checked.weights_sha256,
            )
        except ValidationError as err:
            raise ValueError(f"{source}: invalid model config ({_validation_text(err)})") from err
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: invalid model config ({err})") from err


def model_exists(model_dir: str | Path) -> bool:
    """True when ``model_dir`` holds a model (a config or weights) that a save would replace.

    A swap a crash interrupted is finished first, so a model set aside counts too."""
    model_dir = Path(model_dir)
    _recover(model_dir)
    return (model_dir / CONFIG).is_file() or (model_dir / WEIGHTS).is_file()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _previous_dir(model_dir: Path) -> Path:
    """Where the replaced version waits while a new one is swapped in (not swept: the only
    complete copy if a crash comes between the two renames)."""
    return model_dir.with_name(f".{model_dir.name}.semietpicker-previous")


def _recover(model_dir: Path) -> None:
    """Finish a swap a crash interrupted: bring the previous version back if the folder is
    gone, or drop it once the new version is in place."""
    previous = _previous_dir(model_dir)
    if not previous.is_dir():
        return
    if model_dir.exists():
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(previous, model_dir)


def save_model(model_dir: str | Path, model: torch.nn.Module, card: ModelCard,
               trainer_state: dict | None = None) -> None:
    """Write weights, config (with the weights' checksum) and resume state as one unit.

    Everything goes into a temporary folder beside ``model_dir``, which then replaces it;
    other files the user keeps in the folder are carried over. ``card.weights_sha256`` is
    set to the new weights' checksum.
    """
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    _recover(model_dir)
    sweep_orphans(model_dir.parent)
    mode = new_file_mode(model_dir) if model_dir.exists() else 0o777 & ~current_umask()
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(model_dir), suffix=".tmp",
                                dir=model_dir.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS),
                  metadata={"format": "pt", "package": "napari-semietpicker"})
        card.weights_sha256 = file_sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(card.to_dict(), indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        for name in (WEIGHTS, CONFIG, TRAINER_STATE):
            if (tmp / name).exists():
                os.chmod(tmp / name, 0o666 & ~current_umask())
        _carry_user_files(model_dir, tmp)
        os.chmod(tmp, mode)
        _swap_in(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _carry_user_files(model_dir: Path, new_dir: Path) -> None:
    """Hard-link (or copy) into ``new_dir`` what the user keeps in ``model_dir`` beside ours."""
    if not model_dir.is_dir():
        return
    for entry in model_dir.iterdir():
        if entry.name in (WEIGHTS, CONFIG, TRAINER_STATE):
            continue
        target = new_dir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
            continue
        try:
            os.link(entry, target)
        except OSError:
            shutil.copy2(entry, target)


def _swap_in(new_dir: Path, model_dir: Path) -> None:
    """Replace ``model_dir`` by ``new_dir``: the old one is set aside, the new one moved
    in, the old one removed (:func:`_recover` finishes this after a crash)."""
    if not model_dir.exists():
        os.replace(new_dir, model_dir)
        return
    previous = _previous_dir(model_dir)
    os.replace(model_dir, previous)
    os.replace(new_dir, model_dir)
    shutil.rmtree(previous, ignore_errors=True)


def load_card(model_dir: str | Path) -> ModelCard:
    """Read only the JSON config of a model directory."""
    _recover(Path(model_dir))
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no {CONFIG})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupted model config ({err})") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot read the model config ({err.strerror or err})") from err
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
    if card.weights_sha256 is not None and file_sha256(path) != card.weights_sha256:
        raise ValueError(f"{path}: truncated or corrupted weights (their SHA-256 differs from "
                         f"the one in {CONFIG}; or weights from another model)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupted weights ({err})") from err
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path}: {len(broken)} weight tensor(s) hold NaN or infinite values "
                         f"(e.g. {broken[0]}): the model cannot predict")
    model = build_model(card.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the network in {CONFIG} ({err})") from err
    return model.to(device).eval(), card


def load_trainer_state(model_dir: str | Path) -> dict | None:
    """The resume state, or None if there is none; never unpickles arbitrary objects."""
    path = Path(model_dir) / TRAINER_STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad or unsafe files
        raise ValueError(f"{path}: cannot resume from this file ({err})") from err

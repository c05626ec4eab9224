"""Particle classes: name, radius, metric weight and display colour; presets and files."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticleClass:
    """One kind of particle to pick.

    ``radius_A`` sets the Gaussian target width, the peak-finding kernel and the hit
    distance of the metrics; ``weight`` is the class weight of the CZII F-beta score.
    """

    name: str
    radius_A: float
    weight: float = 1.0
    color: str = "#ffffff"

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"particle class needs a non-empty name, got {self.name!r}")
        if not self.radius_A > 0:
            raise ValueError(
                f"particle class {self.name!r}: radius must be > 0 A, got {self.radius_A}")
        if self.weight < 0:
            raise ValueError(
                f"particle class {self.name!r}: weight must be >= 0, got {self.weight}")


#: Radius given to classes that are not in a preset (Angstrom); edit it in the classes dock.
DEFAULT_RADIUS_A = 100.0
#: Distinct colours (Trubetskoy's list); the CZII preset uses the first six.
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
    "#808000", "#ffd8b1", "#000075", "#808080",
)
CLASS_PRESETS: dict[str, tuple[ParticleClass, ...]] = {
    "czii": (
        ParticleClass("apo-ferritin", 60.0, 1.0, "#e6194b"),
        ParticleClass("beta-amylase", 65.0, 0.0, "#3cb44b"),
        ParticleClass("beta-galactosidase", 90.0, 2.0, "#ffe119"),
        ParticleClass("ribosome", 150.0, 1.0, "#4363d8"),
        ParticleClass("thyroglobulin", 130.0, 2.0, "#f58231"),
        ParticleClass("virus-like-particle", 135.0, 1.0, "#911eb4"),
    ),
}


def load_classes(spec: str | Path) -> list[ParticleClass]:
    """Return the classes named by a preset (``"czii"``) or read from a JSON/YAML file.

    The file holds a list of ``{name, radius_A, weight?, color?}`` mappings, or a mapping
    with such a list under ``classes``.
    """
    if isinstance(spec, str) and spec in CLASS_PRESETS:
        return list(CLASS_PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"unknown particle classes {str(spec)!r}: not a preset ({', '.join(CLASS_PRESETS)}) "
            "and no such file"
        )
    try:
        raw = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse particle classes: {err}") from err
    if isinstance(raw, dict):
        raw = raw.get("classes")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of classes (name, radius_A, ...)")
    try:
        classes = [classes_from_dict(item) for item in raw]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
    check_unique_names(classes)
    return classes


def classes_from_dict(item: dict) -> ParticleClass:
    """Build one class from a mapping, as stored in class files and model configs."""
    if not isinstance(item, dict) or "name" not in item or "radius_A" not in item:
        raise ValueError(f"a class needs 'name' and 'radius_A', got {item!r}")
    return ParticleClass(
        name=str(item["name"]),
        radius_A=float(item["radius_A"]),
        weight=float(item.get("weight", 1.0)),
        color=str(item.get("color", "#ffffff")),
    )


def classes_to_dicts(classes: Sequence[ParticleClass]) -> list[dict]:
    """Plain mappings for JSON files (the inverse of :func:`classes_from_dict`)."""
    return [asdict(c) for c in classes]


def save_classes(classes: Sequence[ParticleClass], path: str | Path) -> None:
    """Write classes to a JSON file that :func:`load_classes` reads back."""
    Path(path).write_text(json.dumps({"classes": classes_to_dicts(classes)}, indent=2))


def check_unique_names(classes: Sequence[ParticleClass]) -> None:
    """Refuse two classes with the same name: picks are matched to classes by name."""
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate particle class names: {', '.join(duplicates)}")


def classes_for_names(names: Iterable[str]) -> list[ParticleClass]:
    """Classes for the names found in a picks file: CZII ones keep their preset radius and
    colour; others get :data:`DEFAULT_RADIUS_A` and a colour no other class here uses.

    A warning names the classes given the default radius: it sets the target width, the
    peak kernel and the hit distance, so a wrong one silently changes training and
    scores. A warning, not an error, because the picks are still worth seeing, and the
    radius can be set in the classes dock or a class file (``--classes``)."""
    czii = {c.name: c for c in CLASS_PRESETS["czii"]}
    names = list(dict.fromkeys(str(n) for n in names))
    used = [czii[n].color for n in names if n in czii]
    classes = []
    for name in names:
        if name in czii:
            classes.append(czii[name])
        else:
            color = distinct_color(used)
            used.append(color)
            classes.append(ParticleClass(name, DEFAULT_RADIUS_A, 1.0, color))
    guessed = [n for n in names if n not in czii]
    if guessed:
        log.warning("class(es) %s have no known radius: using %g A; set the real radius in "
                    "the classes dock or a class file", ", ".join(guessed), DEFAULT_RADIUS_A)
    return classes


def distinct_color(used: Iterable[str]) -> str:
    """The first palette colour not in ``used`` (cycling once the palette is exhausted)."""
    used = [u.lower() for u in used]
    free = [c for c in PALETTE if c not in used]
    return free[0] if free else PALETTE[len(used) % len(PALETTE)]

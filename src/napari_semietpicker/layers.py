"""napari layer data for tomograms and picks, as plain LayerDataTuples (no napari import).

World coordinates are Angstrom (Image ``scale`` = voxel size), axes (z, y, x). Points
layers of a tomogram share its scale (their data are in voxels; docs/coordinates.md), so
that they line up with the image and napari's z slider steps one slice. The reader, the
sample data, the writer and the docks all go through these functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .classes import ParticleClass
from .io.picks import POSITIVE, picks_from_positions, positions_A
from .io.tomogram import Tomogram

#: Key under which layers carry our metadata (class, tomogram, role).
META = "semietpicker"
PICKS = "picks"  # user annotations or corrected picks
PREDICTED = "predicted"
REFERENCE = "reference"


ROLES = (PICKS, REFERENCE, PREDICTED)
#: What each role of an opened picks file is for (shown where the user chooses it).
ROLE_HELP = {PICKS: "labels to train on", REFERENCE: "reference to evaluate against",
             PREDICTED: "predictions (shown with their scores)"}
#: Words in a picks file's name that mark it as a reference (known answers).
REFERENCE_WORDS = ("reference", "groundtruth", "truth", "gt", "solution")


def picks_layer_name(class_name: str, role: str = PICKS, tomogram: str | None = None) -> str:
    """``"ribosome picks"`` (a heatmap layer's role is ``heatmap``); with ``tomogram``
    (several tomograms open) ``"ribosome picks [TS_01]"``, so that layers of different
    tomograms are told apart."""
    name = f"{class_name} {role}"
    return f"{name} [{tomogram}]" if tomogram else name


def infer_role(picks: pd.DataFrame, path: str | Path) -> str:
    """The role an opened picks file most likely has (the user can change it).

    Scores that are not all 1 (hand picks score 1) mean a picker's output: predictions;
    a file named like a reference (``*_reference.csv``, ``ground_truth/``...) holds known
    answers to evaluate against; anything else is labels to train on.
    """
    if "score" in picks and len(picks) and not np.allclose(picks["score"].to_numpy(float), 1.0):
        return PREDICTED
    words = set(re.split(r"[^a-z0-9]+", str(Path(path)).lower()))  # "_" splits words too
    if words & set(REFERENCE_WORDS):
        return REFERENCE
    return PICKS


#: Percentiles of the voxel values that set an opened tomogram's contrast.
CONTRAST_PERCENTILES = (0.5, 99.5)
#: About this many voxels (an evenly strided subset) set the contrast of a large tomogram.
CONTRAST_SAMPLE = 1_000_000


def robust_contrast(data: np.ndarray) -> list[float] | None:
    """Contrast limits from percentiles of an evenly strided subset of the voxels, so that a
    few extreme voxels (gold beads, edges) do not wash the image out; None for a constant
    volume or data that cannot be sliced with steps."""
    step = max(1, int(round((np.prod(data.shape) / CONTRAST_SAMPLE) ** (1 / 3))))
    try:
        sample = np.asarray(data[::step, ::step, ::step], dtype=np.float32)
    except (TypeError, ValueError, IndexError):
        return None
    low, high = (float(v) for v in np.percentile(sample, CONTRAST_PERCENTILES))
    return [low, high] if high > low else None


#: Heatmap values below this are fully transparent (background noise of the network).
HEATMAP_FLOOR = 0.05
#: The opacity of a confident heatmap voxel: the tomogram stays visible beneath.
HEATMAP_OPACITY = 0.7


def heatmap_colormap(rgb: Sequence[float]) -> np.ndarray:
    """RGBA control points of one class's heatmap: transparent up to :data:`HEATMAP_FLOOR`,
    then the class colour, more opaque as the score rises.

    Drawn with ``translucent`` blending, overlapping heatmaps of several classes cover one
    another rather than add up (additive red, green and blue sum to white), and no voxel is
    brighter than its class colour.
    """
    r, g, b = (float(v) for v in rgb[:3])
    return np.array([[r, g, b, 0.0], [r, g, b, 0.0], [r, g, b, HEATMAP_OPACITY]])


def heatmap_controls() -> np.ndarray:
    """Where :func:`heatmap_colormap`'s control points lie on the 0-1 score scale."""
    return np.array([0.0, HEATMAP_FLOOR, 1.0])


def image_layer(tomogram: Tomogram) -> tuple:
    """An Image LayerDataTuple at the tomogram's true voxel size (world unit: Angstrom),
    its contrast set from percentiles (:func:`robust_contrast`)."""
    attrs = {
        "name": tomogram.name,
        "scale": (tomogram.voxel_size,) * 3,
        "units": "angstrom",
        "colormap": "gray",
        "metadata": {META: {"tomogram": tomogram.name, "voxel_size": tomogram.voxel_size}},
    }
    limits = robust_contrast(tomogram.data)
    if limits is not None:
        attrs["contrast_limits"] = limits
    return (tomogram.data, attrs, "image")


def points_layer(picks: pd.DataFrame, cls: ParticleClass, experiment: str,
                 role: str = PICKS, voxel_size: float = 1.0) -> tuple:
    """A Points LayerDataTuple for one class: size = particle diameter, class colour.

    With the tomogram's ``voxel_size`` the layer has the tomogram's scale (data in voxels),
    so that napari's sliders step one slice at a time; without it, data are in Angstrom.

    Scores (when present) become a ``score`` feature (1.0 for points clicked by hand),
    written beside each point in predicted layers;
    with a slice thickness of a radius, points show in nearby 2D slices as discs shrinking
    away from their centre (``rescale_spherical``).
    """
    own = picks[(picks["particle_type"] == cls.name) & (picks["experiment"] == experiment)]
    features = {"score": own["score"].to_numpy(float) if "score" in own else
                np.ones(len(own))}
    if "role" in own:  # hard negatives stay negatives through layers and autosaves
        features["role"] = own["role"].to_numpy(str)
    extra: dict = {"text": score_text(cls.color)} if role == PREDICTED else {}
    return (positions_A(own) / voxel_size, {
        "name": picks_layer_name(cls.name, role),
        "scale": (voxel_size,) * 3,
        "size": 2 * cls.radius_A / voxel_size,
        "face_color": "transparent",
        "border_color": cls.color,
        "border_width": 0.08,
        "projection_mode": "rescale_spherical",
        "shading": "spherical",  # 3D: shaded balls, not flat discs
        "features": pd.DataFrame(features),
        "feature_defaults": {"score": 1.0, **({"role": POSITIVE} if "role" in features else {})},
        "ndim": 3,
        "units": "angstrom",
        "metadata": {META: {"class": cls.name, "tomogram": experiment, "role": role,
                            "radius_A": cls.radius_A, "weight": cls.weight,
                            "color": cls.color}},
        **extra,
    }, "points")


def score_text(color: str) -> dict:
    """napari text for a predicted layer: each pick's score beside it, in the class colour."""
    return {"string": "{score:.2f}", "size": 8, "color": color, "anchor": "upper_left",
            "translation": [0, -2, 2]}


def picks_layers(picks: pd.DataFrame, classes: Sequence[ParticleClass], experiment: str,
                 role: str = PICKS, include_empty: bool = True,
                 voxel_size: float = 1.0) -> list[tuple]:
    """One Points LayerDataTuple per class (empty classes too, ready for clicking)."""
    layers = [points_layer(picks, cls, experiment, role, voxel_size) for cls in classes]
    return [layer for layer in layers if include_empty or len(layer[0])]


def picks_from_layer(data: np.ndarray, metadata: dict, features: pd.DataFrame | None = None,
                     experiment: str | None = None,
                     scale: Sequence[float] | float = 1.0) -> pd.DataFrame:
    """The picks table of one Points layer made by :func:`points_layer` (or by the user).

    The class comes from the layer's metadata; ``experiment`` overrides the tomogram name;
    ``scale`` is the layer's (positions are ``data * scale`` Angstrom from the corner).
    A ``role`` feature (hard negatives from review) becomes the table's ``role`` column.
    """
    meta = metadata.get(META, {})
    if "class" not in meta:
        raise ValueError("this Points layer has no particle class: make it from the "
                         "SemiETPicker classes dock or a picks file")
    name = experiment or meta.get("tomogram") or "tomogram"
    score = None
    if features is not None and "score" in features and len(features) == len(data):
        score = features["score"].to_numpy(float)
    factor = np.asarray(scale, dtype=float).reshape(-1)[-3:]
    picks = picks_from_positions(np.asarray(data, dtype=float).reshape(-1, 3) * factor, name,
                                meta["class"], score)
    if features is not None and "role" in features and len(features) == len(data):
        picks["role"] = features["role"].fillna(POSITIVE).astype(str).to_numpy()
    return picks


#: The gap left between tomograms placed side by side, as a fraction of the new one's width.
SIDE_BY_SIDE_GAP = 0.1


def place_beside(origin: ArrayLike, extent: ArrayLike,
                 others: Sequence[tuple[ArrayLike, ArrayLike]]) -> np.ndarray | None:
    """A world origin (z, y, x Angstrom) for a tomogram of ``extent`` at ``origin`` that
    keeps it clear of the ``others`` (origin, extent): beyond the last of them along x, a
    small gap apart; None when it overlaps none of them already.

    Two tomograms at the same place draw over each other, and so do their picks.
    """
    low, size = np.asarray(origin, dtype=float), np.asarray(extent, dtype=float)
    boxes = [(np.asarray(o, dtype=float), np.asarray(e, dtype=float)) for o, e in others]
    overlaps = any(np.all(low < o + e) and np.all(o < low + size) for o, e in boxes)
    if not overlaps:
        return None
    moved = low.copy()
    moved[2] = max(float(o[2] + e[2]) for o, e in boxes) + SIDE_BY_SIDE_GAP * size[2]
    return moved

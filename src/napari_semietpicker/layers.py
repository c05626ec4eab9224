"""napari layer data for tomograms and picks, as plain LayerDataTuples (no napari import).

World coordinates are Angstrom (Image ``scale`` = voxel size), axes (z, y, x), so Points
in Angstrom line up with the image (DESIGN.md section 3). The reader, the sample data,
the writer and the docks all go through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .classes import ParticleClass
from .io.picks import POSITIVE, picks_from_positions, positions_A
from .io.tomogram import Tomogram

#: Key under which layers carry our metadata (class, tomogram, role).
META = "semietpicker"
PICKS = "picks"  # user annotations or corrected picks
PREDICTED = "predicted"
REFERENCE = "reference"


def picks_layer_name(class_name: str, role: str = PICKS) -> str:
    return f"{class_name} {role}"


def image_layer(tomogram: Tomogram) -> tuple:
    """An Image LayerDataTuple at the tomogram's true voxel size (world unit: Angstrom)."""
    return (tomogram.data, {
        "name": tomogram.name,
        "scale": (tomogram.voxel_size,) * 3,
        "units": "angstrom",
        "colormap": "gray",
        "metadata": {META: {"tomogram": tomogram.name, "voxel_size": tomogram.voxel_size}},
    }, "image")


def points_layer(picks: pd.DataFrame, cls: ParticleClass, experiment: str,
                 role: str = PICKS) -> tuple:
    """A Points LayerDataTuple for one class: size = particle diameter, class colour.

    Scores (when present) become a ``score`` feature (1.0 for points clicked by hand);
    with a slice thickness of a radius, points show in nearby 2D slices as discs shrinking
    away from their centre (``rescale_spherical``).
    """
    own = picks[(picks["particle_type"] == cls.name) & (picks["experiment"] == experiment)]
    features = {"score": own["score"].to_numpy(float) if "score" in own else
                np.ones(len(own))}
    if "role" in own:  # hard negatives stay negatives through layers and autosaves
        features["role"] = own["role"].to_numpy(str)
    return (positions_A(own), {
        "name": picks_layer_name(cls.name, role),
        "size": 2 * cls.radius_A,
        "face_color": "transparent",
        "border_color": cls.color,
        "border_width": 0.08,
        "projection_mode": "rescale_spherical",
        "features": pd.DataFrame(features),
        "feature_defaults": {"score": 1.0},
        "ndim": 3,
        "units": "angstrom",
        "metadata": {META: {"class": cls.name, "tomogram": experiment, "role": role,
                            "radius_A": cls.radius_A, "weight": cls.weight,
                            "color": cls.color}},
    }, "points")


def picks_layers(picks: pd.DataFrame, classes: Sequence[ParticleClass], experiment: str,
                 role: str = PICKS, include_empty: bool = True) -> list[tuple]:
    """One Points LayerDataTuple per class (empty classes too, ready for clicking)."""
    layers = [points_layer(picks, cls, experiment, role) for cls in classes]
    return [layer for layer in layers if include_empty or len(layer[0])]


def picks_from_layer(data: np.ndarray, metadata: dict, features: pd.DataFrame | None = None,
                     experiment: str | None = None) -> pd.DataFrame:
    """The picks table of one Points layer made by :func:`points_layer` (or by the user).

    The class comes from the layer's metadata; ``experiment`` overrides the tomogram name.
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
    picks = picks_from_positions(np.asarray(data, dtype=float).reshape(-1, 3), name,
                                 meta["class"], score)
    if features is not None and "role" in features and len(features) == len(data):
        picks["role"] = features["role"].fillna(POSITIVE).astype(str).to_numpy()
    return picks

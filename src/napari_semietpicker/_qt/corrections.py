"""A tomogram's prediction in the prediction dock and the user's corrections of it.

The prediction keeps every candidate peak
(:class:`~napari_semietpicker.inference.predict.PeakCache`), so a threshold only filters
them. Corrections made with napari's Points tools (add, delete, move) are kept per class
as :class:`Edits` and applied again after each threshold change; they can be merged into
the tomogram's picks layers to become training labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from napari.layers import Points

from ..classes import ParticleClass
from ..inference.merge import picks_not_near
from ..inference.predict import PeakCache
from ..layers import PICKS, PREDICTED
from ..metrics import CZII_DISTANCE_FACTOR
from ..model.checkpoint import ModelCard
from ._layer_tools import add_points_layer, find_layer, layer_picks, to_layer_data

#: the ``peak`` feature of points the user added (not a cached peak)
USER_POINT = -1


@dataclass
class Edits:
    """A user's corrections of one class's predicted points, kept across threshold changes."""

    removed: set[int] = field(default_factory=set)  # cached peak ids deleted
    moved: dict[int, np.ndarray] = field(default_factory=dict)  # peak id -> world position
    added: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # world positions

    @property
    def count(self) -> int:
        return len(self.removed) + len(self.moved) + len(self.added)


@dataclass
class Prediction:
    """One tomogram's prediction: cached peaks, thresholds, corrections, where it lies."""

    tomogram: str
    model_dir: Path
    card: ModelCard
    cache: PeakCache  # its picks carry a "peak" id column
    origin: np.ndarray  # world position of voxel (0, 0, 0)
    voxel_size: float
    shape: tuple[int, int, int]
    thresholds: dict[str, float]
    edits: dict[str, Edits]
    shown: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)

    def scores(self, class_name: str) -> np.ndarray:
        """Scores of all cached peaks of one class."""
        picks = self.cache.picks
        return picks.loc[picks["particle_type"] == class_name, "score"].to_numpy(float)

    def corrected(self, class_name: str) -> tuple[np.ndarray, pd.DataFrame]:
        """World positions and features (``score``, ``peak``) of one class's points: the
        cached peaks above its threshold with the user's corrections applied.

        Remembers which peaks are shown where, for :meth:`record_edits`.
        """
        table = self.cache.at({class_name: self.thresholds[class_name]})
        edits = self.edits[class_name]
        table = table[~table["peak"].isin(edits.removed)]
        ids = table["peak"].to_numpy(int)
        world = table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3) + self.origin
        for row, peak in enumerate(ids):
            if peak in edits.moved:
                world[row] = edits.moved[peak]
        self.shown[class_name] = dict(zip(ids.tolist(), world))
        features = pd.DataFrame({
            "score": np.concatenate([table["score"].to_numpy(float), np.ones(len(edits.added))]),
            "peak": np.concatenate([ids, np.full(len(edits.added), USER_POINT)])})
        return np.concatenate([world, edits.added]), features

    def record_edits(self, class_name: str, world: np.ndarray, peaks: np.ndarray) -> None:
        """Compare a class's points now (world positions, ``peak`` ids) with those shown."""
        edits, shown = self.edits[class_name], self.shown.get(class_name, {})
        edits.removed |= set(shown) - set(peaks[peaks >= 0].tolist())
        for peak, position in zip(peaks, world):
            if peak >= 0 and peak in shown and not np.allclose(position, shown[peak]):
                edits.moved[int(peak)] = position
        edits.added = world[peaks < 0]


def merge_into_labels(viewer: napari.Viewer, prediction: Prediction) -> int:
    """Merge the predicted points into the tomogram's picks layers (role ``picks``).

    Existing picks stay; a prediction within half a radius of one is not added twice.
    The predicted layers are hidden. Returns the number of picks added.
    """
    added = 0
    for cls in prediction.card.classes:
        predicted = find_layer(viewer, Points, prediction.tomogram, PREDICTED, cls.name)
        if predicted is None:
            continue
        added += add_to_labels(viewer, prediction, cls,
                               layer_picks(predicted, prediction.origin, prediction.tomogram))
        predicted.visible = False
    return added


def add_to_labels(viewer: napari.Viewer, prediction: Prediction, cls: ParticleClass,
                  new: pd.DataFrame) -> int:
    """Add one class's picks (Angstrom from the tomogram corner) to its picks layer, made if
    missing; a pick within half a radius of an existing one is skipped. Returns how many."""
    target = find_layer(viewer, Points, prediction.tomogram, PICKS, cls.name)
    if target is None:
        add_points_layer(viewer, new, cls, prediction.tomogram, PICKS, prediction.origin)
        return len(new)
    old = layer_picks(target, prediction.origin, prediction.tomogram)
    far = picks_not_near(new, old, CZII_DISTANCE_FACTOR * cls.radius_A)
    zyx = far[["z", "y", "x"]].to_numpy(float)
    if len(zyx):
        target.add(to_layer_data(target, zyx + prediction.origin))
    return len(zyx)

"""What the prediction dock's panels share: an evented (psygnal) state, no widgets.

The dock owns one :class:`PredictionState` and hands it to its panels (thresholds,
evaluation, export) with a function to report into its status line; the panels read the
state and listen to its events, so none of them imports the dock that holds them.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import napari
import pandas as pd
from psygnal import evented

from ..io.picks import empty_picks
from ..layers import PREDICTED
from ._layer_tools import layer_meta, layer_picks, role_layers
from .corrections import Prediction

if TYPE_CHECKING:
    from typing import ClassVar, Protocol

    from psygnal import SignalInstance

    class _PredictionEvents(Protocol):
        current: SignalInstance
        updating: SignalInstance


@evented(equality_operators={"current": operator.is_})
@dataclass
class PredictionState:
    """The prediction of the tomogram chosen in the dock (None: not predicted), and whether
    the dock is changing layers itself (``updating``: not a user's corrections).

    ``state.events.current`` fires when another prediction becomes the current one.
    """

    current: Prediction | None = None
    updating: bool = False
    if TYPE_CHECKING:
        events: ClassVar[_PredictionEvents]  # made by @evented, per instance

    @contextmanager
    def own_changes(self) -> Iterator[None]:
        """Layer changes made inside are the dock's own, not a user's corrections."""
        self.updating = True
        try:
            yield
        finally:
            self.updating = False


def require_prediction(prediction: Prediction | None) -> Prediction:
    """The prediction where one is needed: a clear error if the tomogram is not predicted."""
    if prediction is None:
        raise ValueError("Predict this tomogram first.")
    return prediction


def current_picks(viewer: napari.Viewer, prediction: Prediction | None,
                  class_name: str | None = None) -> pd.DataFrame:
    """A prediction's picks as shown (thresholded and corrected), in Angstrom from the
    tomogram's corner: one class, or all (``class_name`` None)."""
    prediction = require_prediction(prediction)
    tables = [layer_picks(layer, prediction.origin, prediction.tomogram)
              for layer in role_layers(viewer, prediction.tomogram, PREDICTED)
              if class_name in (None, layer_meta(layer)["class"])]
    return pd.concat(tables, ignore_index=True) if tables else empty_picks()

"""Autosave of the annotation dock's picks layers (files through :mod:`..autosave`).

Each change to a picks layer schedules a save of its tomogram's picks one second later
(edits in between are saved together); pending saves are written when a picks layer is
removed or the viewer window closes. Classes that have no layer in the viewer keep their
autosaved picks, so deleting a layer never deletes picks from the autosave.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import napari
import pandas as pd
from napari.layers import Image
from qtpy.QtCore import QEvent, QObject, QTimer

from .. import autosave
from .._writer import concat_picks, layer_picks
from ..layers import PICKS
from ._layer_tools import layer_meta, role_layers, tomogram_name

AUTOSAVE_DELAY_MS = 1000


class PicksAutosaver(QObject):
    """Writes the picks of tomograms marked dirty, ``AUTOSAVE_DELAY_MS`` after the last mark.

    Install it as an event filter on the viewer window to save pending picks on close.
    ``say`` shows a message (a failed save, an unreadable autosave set aside).
    """

    def __init__(self, viewer: napari.Viewer, say: Callable[[str], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._say = say
        self._paths: dict[str, Path] = {}
        self._saved_once: set[Path] = set()
        self.dirty: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_DELAY_MS)
        self._timer.timeout.connect(self.save_now)

    def mark_dirty(self, tomogram: str) -> None:
        """Schedule a save of this tomogram's picks."""
        if tomogram:
            self.dirty.add(tomogram)
            self._timer.start()

    def save_now(self) -> None:
        """Write the autosave of every tomogram whose picks changed since the last save."""
        self._timer.stop()
        failed = set()
        for tomogram in sorted(self.dirty):
            path = self.path(tomogram)
            try:
                autosave.save_autosave(self._table(tomogram, path), path,
                                       keep_previous=path not in self._saved_once)
            except (OSError, ValueError) as err:
                failed.add(tomogram)
                self._say(f"Autosave of {tomogram} failed: {err}")
            else:
                self._saved_once.add(path)
        self.dirty = failed

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Close and self.dirty:
            self.save_now()
        return False

    def path(self, tomogram: str, image: Image | None = None) -> Path:
        """The autosave of a tomogram: keyed by its Image layer's file when there is one."""
        if tomogram not in self._paths:
            if image is None:
                image = next((layer for layer in self.viewer.layers if isinstance(layer, Image)
                              and tomogram_name(layer) == tomogram), None)
            source = image.source.path if image is not None else None
            self._paths[tomogram] = autosave.autosave_path(source or tomogram)
        return self._paths[tomogram]

    @staticmethod
    def load(path: Path) -> tuple[pd.DataFrame | None, str]:
        """The autosave (or None) and a note; an unreadable one is set aside, never
        overwritten, and the note says where it went."""
        try:
            return autosave.load_autosave(path), ""
        except (OSError, ValueError) as err:
            kept = autosave.set_aside(path)
            return None, f"The autosave could not be read ({err}); it was kept as {kept}"

    def _table(self, tomogram: str, path: Path) -> pd.DataFrame:
        """Picks of this tomogram's layers, plus autosaved picks of classes with no layer."""
        layers = role_layers(self.viewer, tomogram, PICKS)
        tables = [layer_picks(layer.data, {"metadata": layer.metadata, "name": layer.name,
                                           "features": layer.features}, tomogram)
                  for layer in layers]
        previous, note = self.load(path)
        if note:
            self._say(note + ".")
        if previous is not None:
            with_layer = {layer_meta(layer)["class"] for layer in layers}
            tables.append(previous[~previous["particle_type"].isin(with_layer)])
        return concat_picks(tables)

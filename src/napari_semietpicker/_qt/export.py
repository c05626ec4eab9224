"""The prediction dock's export section: the current picks, one class or all, written with
:func:`~napari_semietpicker.io.formats.write_picks` (the previous file kept as ``.bak``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import pandas as pd
from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from .._writer import write_per_group
from ..io.formats import write_picks
from .corrections import Prediction
from .prediction_state import PredictionState, current_picks

ALL_CLASSES = "all classes"
#: (label, format for io.formats.write_picks, file suffix)
EXPORT_FORMATS = (("CZII CSV", "csv", ".csv"), ("RELION 5 STAR", "relion5", ".star"),
                  ("RELION 4 STAR", "relion4", ".star"), ("coords", "coords", ".coords"),
                  ("copick picks JSON", "copick", ".json"))
#: Formats that hold one class per file: exporting several writes one file per class.
ONE_CLASS_FORMATS = ("coords", "copick")


class ExportPanel(QGroupBox):
    """Choose the classes and the format, then write the current prediction's picks.

    The class choices follow ``state.current``; ``say(text, error)`` reports into the
    status line of the dock that holds the panel.
    """

    def __init__(self, viewer: napari.Viewer, state: PredictionState,
                 say: Callable[[str, bool], None]) -> None:
        super().__init__("Export")
        self.viewer = viewer
        self.state = state
        self._say = say
        self.written: list[str] = []  # the files of the last export
        layout = QHBoxLayout(self)
        self.scope_combo = QComboBox()
        self.format_combo = QComboBox()
        self.format_combo.addItems([label for label, _, _ in EXPORT_FORMATS])
        export_button = QPushButton("Export…")
        export_button.clicked.connect(self._choose_export)
        layout.addWidget(self.scope_combo)
        layout.addWidget(self.format_combo)
        layout.addWidget(export_button)
        self.set_classes([])
        state.events.current.connect(self._follow_current)

    def _follow_current(self, prediction: Prediction | None) -> None:
        self.set_classes([] if prediction is None else [c.name for c in prediction.card.classes])

    def set_classes(self, names: list[str]) -> None:
        """The classes that can be exported alone (besides all of them)."""
        self.scope_combo.clear()
        self.scope_combo.addItems([ALL_CLASSES, *names])

    def export(self, path: str | Path, format: str = "csv", class_name: str | None = None
               ) -> pd.DataFrame:
        """Write the current picks (one class or all) to ``path``; keeps ``<name>.bak``.

        Formats of one class per file (.coords, copick JSON) write ``<stem>_<class>`` files
        when several classes are exported, as File > Save does; ``written`` lists them.
        """
        prediction = self.state.current
        if prediction is None:
            raise ValueError("no prediction to export: pick a tomogram first")
        picks = current_picks(self.viewer, prediction, class_name)
        options: dict[str, Any] = {"format": format, "voxel_size": prediction.voxel_size,
                   "shape_by_experiment": {prediction.tomogram: prediction.shape}}
        if format in ONE_CLASS_FORMATS:
            self.written = write_per_group(picks, Path(path), ["particle_type"], **options)
        else:
            write_picks(picks, path, keep_previous=True, **options)
            self.written = [str(path)]
        return picks

    def _choose_export(self) -> None:
        label, fmt, suffix = EXPORT_FORMATS[self.format_combo.currentIndex()]
        path, _ = QFileDialog.getSaveFileName(self, "Export picks", "", f"{label} (*{suffix})")
        if not path:
            return
        scope = self.scope_combo.currentText()
        try:
            picks = self.export(path, fmt, None if scope == ALL_CLASSES else scope)
        except (ValueError, OSError) as err:
            self._say(f"Export failed: {err}", True)
            return
        self._say(f"Wrote {len(picks)} picks to {', '.join(self.written)}", False)

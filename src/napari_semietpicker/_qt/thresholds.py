"""The prediction dock's per-class rows: a heatmap toggle, a threshold slider and a count of
picks and corrections for each class, with the score histogram of the cached peaks below."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QGridLayout, QGroupBox, QLabel, QVBoxLayout
from superqt import QLabeledDoubleSlider

from ..classes import ParticleClass
from ..inference.predict import PEAK_FLOOR
from .plots import ScoreHistogram


def count_text(picks: int, edits: int) -> str:
    """``12 picks, 2 edits`` (edits left out when there are none)."""
    text = f"{picks} pick{'s' if picks != 1 else ''}"
    return text + (f", {edits} edit{'s' if edits != 1 else ''}" if edits else "")


@dataclass(frozen=True)
class ClassRow:
    """One class's widgets: its heatmap toggle, threshold slider and count of picks."""

    heatmap: QCheckBox
    slider: QLabeledDoubleSlider
    count: QLabel


class ThresholdRows(QGroupBox):
    """One :class:`ClassRow` per class in ``rows`` (by class name), with the score
    histogram of the cached peaks below."""

    def __init__(self, on_visible: Callable[[str, bool], None],
                 on_threshold: Callable[[str, float], None]) -> None:
        super().__init__("Picks per class: heatmap, threshold, count")
        self._on_visible, self._on_threshold = on_visible, on_threshold
        self.rows: dict[str, ClassRow] = {}
        layout = QVBoxLayout(self)
        self.grid = QGridLayout()
        layout.addLayout(self.grid)
        self.histogram = ScoreHistogram()
        layout.addWidget(self.histogram)

    def set_classes(self, classes: Sequence[ParticleClass], thresholds: dict[str, float],
                    heatmap_shown: dict[str, bool]) -> None:
        """Rebuild the rows (none: no prediction to show)."""
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            assert widget is not None  # the grid holds widgets only
            widget.deleteLater()
        self.rows.clear()
        if not classes:
            self.histogram.set_series([])
        for i, cls in enumerate(classes):
            visible = QCheckBox(cls.name)
            visible.setStyleSheet(f"color: {cls.color};")
            visible.setToolTip("show this class's heatmap")
            visible.setChecked(heatmap_shown.get(cls.name, False))
            visible.toggled.connect(lambda on, name=cls.name: self._on_visible(name, on))
            slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
            slider.setRange(PEAK_FLOOR, 1.0)
            slider.setDecimals(2)
            slider.setSingleStep(0.01)  # type: ignore[arg-type]  # superqt's stub says int
            slider.setValue(thresholds[cls.name])
            slider.valueChanged.connect(lambda v, name=cls.name: self._on_threshold(name, v))
            count = QLabel()
            for column, widget in enumerate((visible, slider, count)):
                self.grid.addWidget(widget, i, column)
            self.rows[cls.name] = ClassRow(visible, slider, count)

    def set_count(self, class_name: str, picks: int, edits: int) -> None:
        if class_name in self.rows:
            self.rows[class_name].count.setText(count_text(picks, edits))

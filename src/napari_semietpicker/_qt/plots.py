"""Small QPainter plots for the docks: the training loss and the predicted score histogram."""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..inference.predict import PEAK_FLOOR

BACKGROUND = "#1e1e1e"
TEXT_COLOR = "#aaaaaa"
LOSS_COLOR = "#4fc3f7"
UNLABELLED_LOSS_COLOR = "#ffb74d"


class _Plot(QWidget):
    """A fixed-height, full-width plot area."""

    def __init__(self, height: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def _painter(self) -> QPainter:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(BACKGROUND))
        painter.setPen(QColor(TEXT_COLOR))
        return painter


class LossPlot(_Plot):
    """The training loss per step on a log scale (labelled loss and, if any, unlabelled)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(110, parent)
        self.losses: list[float] = []
        self.unlabelled: list[float] = []

    def clear(self) -> None:
        self.losses, self.unlabelled = [], []
        self.update()

    def add(self, loss: float, loss_unlabelled: float | None = None) -> None:
        self.losses.append(float(loss))
        if loss_unlabelled is not None:
            self.unlabelled.append(float(loss_unlabelled))
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        painter = self._painter()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        values = np.asarray([v for v in self.losses + self.unlabelled if v > 0 and
                             math.isfinite(v)])
        if not len(values):
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "loss (log scale) appears here")
            return
        low, high = np.log10(values.min()), np.log10(values.max())
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        left, top, width, height = 44, 6, self.width() - 52, self.height() - 24
        painter.drawText(2, top + 10, f"{10**high:.2g}")
        painter.drawText(2, top + height, f"{10**low:.2g}")
        painter.drawText(left, self.height() - 4, f"step 1 .. {len(self.losses)}   loss (log)")
        painter.drawRect(left, top, width, height)
        for series, color in ((self.losses, LOSS_COLOR), (self.unlabelled, UNLABELLED_LOSS_COLOR)):
            if not series:
                continue
            offset = len(self.losses) - len(series)  # unlabelled losses start later
            n = max(2, len(self.losses))
            step = max(1, len(series) // max(1, width))
            line = QPolygonF()
            for i in range(0, len(series), step):
                value = max(series[i], 10**low)
                x = left + width * (offset + i) / (n - 1)
                y = top + height * (high - math.log10(value)) / (high - low)
                line.append(QPointF(x, y))
            painter.setPen(QPen(QColor(color), 1.5))
            painter.drawPolyline(line)


class ScoreHistogram(_Plot):
    """Score histograms of the cached peaks, one outline per class, thresholds dashed."""

    BINS = np.linspace(PEAK_FLOOR, 1.0, 20)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(90, parent)
        self.series: list[tuple[str, np.ndarray, float]] = []

    def set_series(self, series: list[tuple[str, np.ndarray, float]]) -> None:
        """(colour, scores, threshold) per class."""
        self.series = series
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        painter = self._painter()
        left, top, width, height = 6, 4, self.width() - 12, self.height() - 20
        painter.drawText(left, self.height() - 4, f"score {PEAK_FLOOR:g}")
        painter.drawText(left + width - 8, self.height() - 4, "1")
        counts = [np.histogram(s, self.BINS)[0] for _, s, _ in self.series]
        peak = max([1, *(int(c.max()) for c in counts if len(c))])
        span = self.BINS[-1] - self.BINS[0]
        for (color, _, threshold), count in zip(self.series, counts):
            line = QPolygonF()
            for i, n in enumerate(count):
                y = top + height * (1 - np.sqrt(n / peak))  # sqrt: small bins stay visible
                for edge in (self.BINS[i], self.BINS[i + 1]):
                    line.append(QPointF(left + width * (edge - self.BINS[0]) / span, y))
            painter.setPen(QPen(QColor(color), 1.5))
            painter.drawPolyline(line)
            x = left + width * (threshold - self.BINS[0]) / span
            painter.setPen(QPen(QColor(color), 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(x, top), QPointF(x, top + height))

"""Small Qt pieces shared by the docks: a status line, a folder field, combo refills, a
cross-thread relay and an event-loop delay probe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QElapsedTimer, QObject, QSize, Qt, QTimer
from qtpy.QtCore import Signal as QtSignal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

ERROR_STYLE = "color: #ff6b6b;"


class StatusLabel(QLabel):
    """The message line at the bottom of a dock (selectable, wrapped; errors in red)."""

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def say(self, text: str, error: bool = False) -> None:
        self.setStyleSheet(ERROR_STYLE if error else "")
        self.setText(text)


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only: as wide as its content needs, as short as the dock is."""

    def __init__(self) -> None:
        super().__init__()
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        inner, bar = self.widget(), self.verticalScrollBar()
        assert bar is not None  # a scroll area always has its scroll bars
        content = inner.minimumSizeHint().width() if inner is not None else 0
        return QSize(content + bar.sizeHint().width(), 120)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        inner = self.widget()
        hint = inner.sizeHint() if inner is not None else QSize(0, 0)
        return QSize(self.minimumSizeHint().width(), hint.height())


def scrolled_layout(dock: QWidget) -> QVBoxLayout:
    """The layout of a dock's content, inside a scroll area that fills the dock, so that a
    dock can be shorter than its content (docks share a laptop screen's height)."""
    inner = QWidget()
    scroll = _VerticalScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


def fit_table_height(table: QTableWidget, max_rows: int = 8) -> None:
    """Make a table exactly as tall as its header and rows (up to ``max_rows``, then it
    scrolls), so that a table of six classes shows six rows."""
    rows = min(table.rowCount(), max_rows)
    header, bar = table.horizontalHeader(), table.horizontalScrollBar()
    assert header is not None and bar is not None  # a table always has both
    height = header.height() + 2 * table.frameWidth() + sum(
        table.rowHeight(r) for r in range(rows))
    if table.rowCount() > max_rows or bar.isVisible():
        height += bar.sizeHint().height()
    table.setFixedHeight(height)


def folder_row(placeholder: str, title: str) -> tuple[QHBoxLayout, QLineEdit]:
    """A line edit for a folder with a "…" button that opens a folder dialog into it."""
    row = QHBoxLayout()
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = QPushButton("…")
    browse.setMaximumWidth(30)

    def choose() -> None:
        path = QFileDialog.getExistingDirectory(edit, title)
        if path:
            edit.setText(path)

    browse.clicked.connect(choose)
    row.addWidget(edit)
    row.addWidget(browse)
    return row, edit


def set_combo_items(combo: QComboBox, names: Sequence[str]) -> str:
    """Replace a combo box's items without signals, keeping the current one if still there.

    Returns the text that was current before.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(names))
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
    return current


class Relay(QObject):
    """Carries progress reports from a worker thread to the GUI thread (queued)."""

    progress = QtSignal(object)


def format_duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for ETAs."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LatenessProbe(QObject):
    """Measures event-loop delay: a timer due every ``interval_ms`` records how late it fires."""

    def __init__(self, interval_ms: int = 50, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.lateness_ms: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.lateness_ms = []
        self._clock.start()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        self.lateness_ms.append(max(0.0, self._clock.restart() - self.interval_ms))

    def summary(self) -> str:
        if not self.lateness_ms:
            return "UI delay: not measured"
        late = np.asarray(self.lateness_ms)
        return (f"UI delay while training: max {late.max():.0f} ms, 95% under "
                f"{np.percentile(late, 95):.0f} ms, mean {late.mean():.1f} ms "
                f"({len(late)} samples)")

"""Review dock: the prediction's most uncertain picks first, answered from the keyboard.

A thin face over :mod:`napari_semietpicker.inference.review`: it builds the queue of the tomogram
chosen in the prediction dock, centres the viewer on one item at a time (slice, centre and
zoom), records accept / reject / change class / move, autosaves every decision at once (a
kill loses none; reopening the queue restores them) and turns the decisions into training
labels: accepted and moved picks join the class's picks layer, rejected ones go to a
``<class> negatives`` picks layer whose points train as hard negatives.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Points
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..classes import ParticleClass
from ..inference.review import (
    ACCEPT,
    CHANGE_CLASS,
    MOVE,
    REJECT,
    Review,
    build_queue,
    labels_after_review,
    review_path,
)
from ..io.picks import NEGATIVE, POSITIVE
from ..layers import META, PICKS
from ._layer_tools import HEATMAP, add_points_layer, find_layer, layer_meta, tomogram_name
from ._widgets import StatusLabel
from .corrections import USER_POINT, Prediction, add_to_labels

#: role of the one-point layer that rings the item under review
CURRENT = "review"
#: napari keys of the panel (none of them is a napari default)
KEYS = {"accept": "k", "reject": "j", "change class": "h", "move to cursor": "g",
        "next": "n", "previous": "Shift-N"}
COLUMNS = ["class", "score", "priority", "decision", "reason"]
#: the view shows this many particle radii across
FIELD_RADII = 12


class ReviewWidget(QWidget):
    """The review queue of the prediction dock's current tomogram, driven by keys."""

    def __init__(self, napari_viewer: napari.Viewer,
                 prediction_source: Callable[[], Prediction | None] | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._source = prediction_source
        self.review: Review | None = None
        self.prediction: Prediction | None = None
        self.index = -1
        self.path: Path | None = None  # where the decisions are autosaved
        self._build()
        self._bound: dict[str, Callable[[napari.Viewer], None]] = {}
        for action, key in KEYS.items():
            self._bound[key] = self._key(action)
            self.viewer.bind_key(key, self._bound[key], overwrite=True)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.build_button = QPushButton("Build review queue")
        self.build_button.setToolTip("Rank the predicted tomogram's picks, most uncertain first")
        self.build_button.clicked.connect(self.build)
        layout.addWidget(self.build_button)
        self.progress_label = QLabel("no queue yet")
        layout.addWidget(self.progress_label)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        assert header is not None  # a table always has one
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.cellClicked.connect(lambda row, _: self.go(row))
        layout.addWidget(self.table)
        moves = QHBoxLayout()
        self.previous_button = QPushButton(f"Previous ({KEYS['previous']})")
        self.previous_button.clicked.connect(self.previous)
        self.next_button = QPushButton(f"Next ({KEYS['next']})")
        self.next_button.clicked.connect(self.next)
        moves.addWidget(self.previous_button)
        moves.addWidget(self.next_button)
        layout.addLayout(moves)
        answers = QHBoxLayout()
        for text, slot in (("Accept", self.accept), ("Reject", self.reject),
                           ("Move to cursor", self.move_pick)):
            button = QPushButton(f"{text} ({KEYS[text.lower()]})")
            button.clicked.connect(slot)
            answers.addWidget(button)
        layout.addLayout(answers)
        reclass = QHBoxLayout()
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("the class that 'change class' gives the item")
        change = QPushButton(f"Change class to ({KEYS['change class']})")
        change.clicked.connect(self.change_class)
        reclass.addWidget(change)
        reclass.addWidget(self.class_combo)
        layout.addLayout(reclass)
        self.labels_button = QPushButton("Use decisions as labels")
        self.labels_button.setToolTip("Accepted and moved picks join the picks layers; rejected "
                                      "ones become hard negatives for the next fine-tune")
        self.labels_button.clicked.connect(self._on_labels_clicked)
        layout.addWidget(self.labels_button)
        self.status = StatusLabel("Predict a tomogram, then build its review queue.")
        layout.addWidget(self.status)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.say(text, error)

    def _key(self, action: str) -> Callable[[napari.Viewer], None]:
        slots = {"accept": self.accept, "reject": self.reject, "change class": self.change_class,
                 "move to cursor": self.move_pick, "next": self.next, "previous": self.previous}
        return lambda viewer: slots[action]()

    # -- the queue ---------------------------------------------------------------------------
    def _prediction(self) -> Prediction | None:
        if self._source is not None:
            return self._source()
        from .prediction import PredictionWidget  # the dock this panel serves

        window = getattr(self.viewer, "window", None)
        for widget in getattr(window, "dock_widgets", {}).values():
            widget = getattr(widget, "native", widget)
            if isinstance(widget, PredictionWidget):
                return widget.current
        return None

    def _heatmaps(self, prediction: Prediction) -> np.ndarray | None:
        """The heatmaps shown for this prediction, on its ``cache.heatmap_grid`` (None if
        any is gone)."""
        layers = [find_layer(self.viewer, Image, prediction.tomogram, HEATMAP, c.name)
                  for c in prediction.card.classes]
        shown = [layer for layer in layers if layer is not None]
        if len(shown) < len(layers):
            return None
        return np.stack([np.asarray(layer.data, np.float32) for layer in shown])

    def build(self) -> None:
        """Rank the current prediction's picks and restore any decisions saved for them."""
        prediction = self._prediction()
        if prediction is None:
            self._say("Predict a tomogram in the prediction dock first.", error=True)
            return
        card = prediction.card
        queue = build_queue(prediction.cache.picks, card.classes, prediction.thresholds,
                            self._heatmaps(prediction), prediction.cache.heatmap_grid)
        self.prediction, self.review = prediction, Review(queue)
        image = next((layer for layer in self.viewer.layers if isinstance(layer, Image)
                      and tomogram_name(layer) == prediction.tomogram), None)
        source = getattr(getattr(image, "source", None), "path", None)
        self.path = review_path(source or prediction.tomogram)
        try:
            restored = self.review.restore(self.path)
        except ValueError as err:
            restored = 0
            self._say(f"Earlier decisions not restored: {err}", error=True)
        self.class_combo.clear()
        self.class_combo.addItems([c.name for c in card.classes])
        self._fill_table()
        first = next((i for i in range(len(queue)) if i not in self.review.decisions), 0)
        if len(queue):
            self.go(first)
        note = f"; {restored} earlier decision(s) restored" if restored else ""
        self._say(f"{len(queue)} items to review in {prediction.tomogram}{note}. Keys: " +
                  ", ".join(f"{k} {a}" for a, k in KEYS.items()))

    def _built(self) -> tuple[Review, Prediction]:
        """The review queue and the prediction it was built from (an error before Build)."""
        if self.review is None or self.prediction is None:
            raise ValueError("Build the review queue first.")
        return self.review, self.prediction

    def _fill_table(self) -> None:
        queue = self._built()[0].queue
        self.table.setRowCount(len(queue))
        for row, item in enumerate(queue.itertuples()):
            reason = str(item.reason)
            cells = [str(item.particle_type), f"{item.score:.2f}", f"{item.priority:.2f}", "",
                     reason]
            for column, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(reason)
                self.table.setItem(row, column, cell)
            self._show_decision(row)
        self._update_progress()

    def _show_decision(self, row: int) -> None:
        decision = self._built()[0].decisions.get(row)
        text = "" if decision is None else decision.action + (
            f" to {decision.particle_type}" if decision.action == CHANGE_CLASS else "")
        cell = self.table.item(row, COLUMNS.index("decision"))
        assert cell is not None  # _fill_table sets every cell
        cell.setText(text)

    def _update_progress(self) -> None:
        self.progress_label.setText(self.review.progress() if self.review else "no queue yet")

    # -- moving through it --------------------------------------------------------------------
    def go(self, index: int) -> None:
        """Show queue item ``index``: its slice, centred and zoomed, ringed in the viewer."""
        if self.review is None or self.prediction is None or not len(self.review.queue):
            return
        self.index = int(np.clip(index, 0, len(self.review.queue) - 1))
        item = self.review.item(self.index)
        world = item[["z", "y", "x"]].to_numpy(float) + self.prediction.origin
        radius = next(c.radius_A for c in self.prediction.card.classes
                      if c.name == item["particle_type"])
        self._ring(world, radius)  # first: a new ring layer would move the slider again
        self.viewer.dims.set_point(range(len(world)), tuple(world))
        camera = self.viewer.scene.camera
        camera.center = tuple(world[list(self.viewer.dims.displayed)])
        camera.zoom = self._canvas_pixels() / (FIELD_RADII * radius)
        self.table.selectRow(self.index)
        self.table.scrollToItem(self.table.item(self.index, 0))

    def _canvas_pixels(self) -> float:
        canvas = getattr(getattr(self.viewer.window, "_qt_viewer", None), "canvas", None)
        size = getattr(getattr(canvas, "native", None), "size", None)
        return float(min(size().width(), size().height())) if size else 600.0

    def _ring(self, world: np.ndarray, radius: float) -> None:
        tomogram = self._built()[1].tomogram
        layer = find_layer(self.viewer, Points, tomogram, CURRENT, None)
        if layer is None:
            layer = self.viewer.add_points(
                world[None], name="review item", size=2.4 * radius, face_color="transparent",
                border_color="white", border_width=0.15, projection_mode="rescale_spherical",
                units="angstrom", metadata={META: {"tomogram": tomogram, "role": CURRENT}})
            self.viewer.layers.selection.active = layer
        else:
            layer.data, layer.size = world[None], 2.4 * radius

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    # -- answering ----------------------------------------------------------------------------
    def _decide(self, action: str, particle_type: str | None = None,
                zyx: np.ndarray | None = None) -> None:
        if self.review is None or self.path is None or self.index < 0:
            self._say("Build the review queue first.", error=True)
            return
        decision = self.review.decide(self.index, action, particle_type, zyx)
        try:
            self.review.save(self.path)
        except OSError as err:
            self._say(f"Decision kept here but not saved to {self.path}: {err}", error=True)
        self._show_decision(self.index)
        self._update_progress()
        self._say(f"item {self.index + 1}: {decision.action} {decision.particle_type}")
        if self.index + 1 < len(self.review.queue):
            self.next()

    def accept(self) -> None:
        self._decide(ACCEPT)

    def reject(self) -> None:
        self._decide(REJECT)

    def change_class(self) -> None:
        """Give the item the class chosen in the panel (the next class if it is its own)."""
        if self.review is None or self.index < 0:
            self._say("Build the review queue first.", error=True)
            return
        names = [self.class_combo.itemText(i) for i in range(self.class_combo.count())]
        chosen = self.class_combo.currentText()
        own = self.review.item(self.index)["particle_type"]
        if chosen == own and len(names) > 1:
            chosen = names[(names.index(own) + 1) % len(names)]
        self._decide(CHANGE_CLASS, chosen)

    def move_pick(self) -> None:
        """The item is a particle whose centre is at the mouse cursor."""
        if self.prediction is None:
            self._say("Build the review queue first.", error=True)
            return
        world = np.asarray(self.viewer.cursor.position, float)[-3:]
        self._decide(MOVE, zyx=world - self.prediction.origin)

    # -- decisions as labels --------------------------------------------------------------------
    def use_as_labels(self) -> tuple[int, int]:
        """Accepted, moved and re-classed picks (and the undecided picks shown) join the
        picks layers; rejected ones fill ``<class> negatives`` layers. Returns the counts."""
        review, prediction = self._built()
        shown = []
        for cls in prediction.card.classes:
            world, features = prediction.corrected(cls.name)
            table = pd.DataFrame({"experiment": prediction.tomogram, "particle_type": cls.name,
                                  "x": world[:, 2] - prediction.origin[2],
                                  "y": world[:, 1] - prediction.origin[1],
                                  "z": world[:, 0] - prediction.origin[0],
                                  "score": features["score"].to_numpy(float),
                                  "peak": features["peak"].to_numpy(int)})
            shown.append(table)
        current = pd.concat(shown, ignore_index=True)
        current.loc[current["peak"] == USER_POINT, "peak"] = -2  # never a queued peak id
        labels = labels_after_review(current, review)
        positives = negatives = 0
        for cls in prediction.card.classes:
            own = labels[labels["particle_type"] == cls.name]
            positives += add_to_labels(self.viewer, prediction, cls, own[own["role"] == POSITIVE])
            rejected = own[own["role"] == NEGATIVE]
            negatives += len(rejected)
            self._negatives_layer(cls, rejected)
        return positives, negatives

    def _negatives_layer(self, cls: ParticleClass, rejected: pd.DataFrame) -> None:
        """Replace the class's hard negatives with these (a picks layer, role feature)."""
        prediction = self._built()[1]
        layer = next((la for la in self.viewer.layers if isinstance(la, Points)
                      and layer_meta(la).get("negatives")
                      and layer_meta(la).get("class") == cls.name
                      and layer_meta(la).get("tomogram") == prediction.tomogram),
                     None)
        if layer is not None:
            self.viewer.layers.remove(layer)
        if not len(rejected):
            return
        layer = add_points_layer(self.viewer, rejected, cls, prediction.tomogram, PICKS,
                                 prediction.origin, negatives=True)
        layer.name = f"{cls.name} negatives"
        layer.features = pd.DataFrame({"score": rejected["score"].to_numpy(float),
                                       "role": NEGATIVE})
        layer.feature_defaults = {"score": 1.0, "role": NEGATIVE}
        layer.symbol = "x"
        layer.border_color = "#808080"

    def _on_labels_clicked(self) -> None:
        try:
            positives, negatives = self.use_as_labels()
        except ValueError as err:
            self._say(str(err), error=True)
            return
        self._say(f"{positives} pick(s) added as labels and {negatives} hard negative(s) of "
                  f"{self._built()[1].tomogram}: fine-tune in the Training dock.")

    def closeEvent(self, event: QCloseEvent | None) -> None:  # noqa: N802 (Qt API)
        """Unbind the panel's keys, where still its own (decisions are already saved)."""
        for key, func in self._bound.items():
            if self.viewer.keymap.get(coerce_keybinding(key)) is func:
                self.viewer.bind_key(key, None)
        self._bound = {}
        super().closeEvent(event)

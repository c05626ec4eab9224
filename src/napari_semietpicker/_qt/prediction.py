"""Prediction dock: pick a tomogram, tune thresholds live, correct, evaluate and export.

Prediction runs in a napari worker; its peaks are cached (:class:`PeakCache`), so a
threshold slider only filters them and updates the Points layer in place. Corrections
made with napari's Points tools (add, delete, move) are remembered per class
(:mod:`.corrections`) and survive threshold changes; they can become training labels for
the training dock. Evaluation (:mod:`.evaluation`) and export (:mod:`.export`) are sections
of their own.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Layer, Points
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..compute import available_devices
from ..inference.predict import PredictConfig
from ..io.picks import empty_picks
from ..layers import PREDICTED
from ..metrics import Evaluation
from ..model.checkpoint import WEIGHTS, save_thresholds
from ..pipeline import Picked, Picker
from ._layer_tools import (
    HEATMAP,
    add_points_layer,
    align_tomogram_layers,
    find_layer,
    image_tomogram,
    layer_meta,
    layer_origin,
    show_heatmap,
    to_layer_data,
    tomogram_images,
    tomogram_name,
    world_points,
)
from ._widgets import Relay, StatusLabel, folder_row, scrolled_layout, set_combo_items
from .corrections import USER_POINT, Edits, Prediction, merge_into_labels
from .evaluation import EvaluationPanel
from .export import ExportPanel
from .lifecycle import BackgroundJob, DockLifecycle
from .predict_job import run_prediction
from .prediction_state import PredictionState, current_picks, require_prediction
from .thresholds import ThresholdRows
from .training import TrainingWidget


class PredictionWidget(QWidget):
    """Predict picks with a trained model, then QC (thresholds, evaluation) and export."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.predictions: dict[str, Prediction] = {}
        self.last_repick_ms: float | None = None
        #: The model last picked with, kept loaded while its folder holds these weights.
        self.picker: Picker | None = None
        #: What the panels share: the current prediction (see :class:`PredictionState`).
        self.state = PredictionState()
        self._worker: BackgroundJob | None = None
        self._job: tuple | None = None
        self._linked_docks: list[TrainingWidget] = []  # whose model_ready is connected
        self._relay = Relay(self)
        self._relay.progress.connect(self._on_progress)
        self.lifecycle = DockLifecycle(self, self._on_dock_closed)
        self._build()
        self.lifecycle.connect(self.viewer.layers.events.inserted, self._refresh_images)
        self.lifecycle.connect(self.viewer.layers.events.removed, self._refresh_images)
        self._refresh_images()
        self._link_training_dock()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = scrolled_layout(self)
        form = QFormLayout()
        model_row, self.model_edit = folder_row(
            "model folder (or train one in the Training dock)", "Model folder")
        form.addRow("Model", model_row)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(lambda _: self._show_current())
        form.addRow("Tomogram", self.image_combo)
        self.window_spin = QSpinBox()
        self.window_spin.setRange(32, 512)
        self.window_spin.setSingleStep(32)
        self.window_spin.setValue(PredictConfig.window)
        self.window_spin.setToolTip("sliding-window side in voxels (multiple of 32)")
        form.addRow("Window", self.window_spin)
        self.tta_check = QCheckBox("test-time flips (4 views, slower)")
        self.tta_check.setChecked(PredictConfig.tta)
        form.addRow(self.tta_check)
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        form.addRow("Device", self.device_combo)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._stop_prediction)
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        layout.addWidget(self.progress_bar)

        self.thresholds = ThresholdRows(self.set_heatmap_visible, self.set_threshold)
        self.histogram = self.thresholds.histogram
        self.labels_button = QPushButton("Use corrections as labels")
        self.labels_button.setToolTip("Copy the predicted (and corrected) points into picks "
                                      "layers of this tomogram, for the Training dock")
        self.labels_button.clicked.connect(self._on_labels_clicked)
        self.finetune_check = QCheckBox("then fine-tune in the Training dock")
        self.save_thresholds_button = QPushButton("Save thresholds to the model")
        self.save_thresholds_button.setToolTip(
            "Write these per-class thresholds into the model's config.json: the CLI and the "
            "next prediction pick with them")
        self.save_thresholds_button.clicked.connect(self.save_thresholds)
        rows_layout = self.thresholds.layout()
        assert rows_layout is not None  # ThresholdRows lays itself out
        rows_layout.addWidget(self.save_thresholds_button)
        rows_layout.addWidget(self.labels_button)
        rows_layout.addWidget(self.finetune_check)
        layout.addWidget(self.thresholds)

        self.evaluation_panel = EvaluationPanel(self.viewer, self.state, self._say)
        self.evaluate_button = self.evaluation_panel.evaluate_button
        self.table = self.evaluation_panel.table
        layout.addWidget(self.evaluation_panel)
        self.export_panel = ExportPanel(self.viewer, self.state, self._say)
        layout.addWidget(self.export_panel)
        self.status = StatusLabel("Choose a model and a tomogram, then Predict.")
        layout.addWidget(self.status)
        layout.addStretch()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.say(text, error)

    def _refresh_images(self, event: object = None) -> None:
        align_tomogram_layers(self.viewer)
        names = [image.name for image in tomogram_images(self.viewer)]
        if set_combo_items(self.image_combo, names) != self.image_combo.currentText():
            self._show_current()

    def own_changes(self) -> AbstractContextManager[None]:
        """Layer changes made inside are the dock's own, not a user's corrections."""
        return self.state.own_changes()

    # -- the training dock and the model ---------------------------------------------------------
    def _training_dock(self) -> TrainingWidget | None:
        window = getattr(self.viewer, "window", None)
        for widget in getattr(window, "dock_widgets", {}).values():
            widget = getattr(widget, "native", widget)
            if isinstance(widget, TrainingWidget):
                return widget
        return None

    def _link_training_dock(self) -> TrainingWidget | None:
        dock = self._training_dock()
        if dock is not None and not any(d is dock for d in self._linked_docks):
            self._linked_docks.append(dock)
            self.lifecycle.connect(dock.model_ready, self._on_model_ready)
        if dock is not None and dock.last_model_dir is not None and not self.model_edit.text():
            self.model_edit.setText(str(dock.last_model_dir))
        return dock

    def _on_model_ready(self, model_dir: str) -> None:
        self.model_edit.setText(model_dir)
        self._say(f"Model from the Training dock: {model_dir}")

    def _image(self) -> Image | None:
        name = self.image_combo.currentText()
        return next((i for i in tomogram_images(self.viewer) if i.name == name), None)

    @property
    def current(self) -> Prediction | None:
        """The prediction of the tomogram chosen in the dock, if it was predicted."""
        image = self._image()
        return None if image is None else self.predictions.get(tomogram_name(image))

    # -- predicting ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a prediction is running in the worker thread."""
        return self._worker is not None

    def predict(self) -> None:
        """Pick the chosen tomogram in a worker thread (a clear message if something's missing)."""
        if self._worker is not None:
            return
        self._link_training_dock()
        image = self._image()
        model_dir = Path(self.model_edit.text().strip()).expanduser()
        if image is None:
            self._say("Open a tomogram (an Image layer) first.", error=True)
            return
        if not self.model_edit.text().strip() or not (model_dir / WEIGHTS).is_file():
            self._say("Choose a model folder (with model.safetensors) or train one first.",
                      error=True)
            return
        try:
            tomogram = image_tomogram(image)
        except ValueError as err:
            self._say(str(err), error=True)
            return
        device = self.device_combo.currentText()
        config = PredictConfig(window=self.window_spin.value(), tta=self.tta_check.isChecked())
        self.predict_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress_bar.setFormat("loading…")
        self._say(f"Picking {tomogram.name} with {model_dir.name}…")
        self._job = (model_dir, image)
        self._worker = BackgroundJob(
            "prediction", run_prediction, model_dir, self.picker, tomogram, config, device,
            lambda done, total: self._relay.progress.emit((done, total)),
            on_returned=self._on_predicted, on_error=self._on_error,
            on_finished=self._on_finished)

    def _stop_prediction(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    def _on_progress(self, report: tuple[int, int]) -> None:
        done, total = report
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat("window %v/%m")

    def _on_error(self, err: Exception) -> None:
        stopped = isinstance(err, InterruptedError)
        self._say("Prediction stopped." if stopped else f"Prediction failed: {err}",
                  error=not stopped)

    def _on_finished(self) -> None:
        self._worker = None
        self.predict_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def _on_predicted(self, result: tuple[Picker, Picked]) -> None:
        self.picker, picked = result
        assert self._job is not None  # a job returned
        model_dir, image = self._job
        card, peaks, heat, tomogram = (self.picker.card, picked.peaks, picked.heatmaps,
                                       picked.tomogram)
        peaks.picks["peak"] = np.arange(len(peaks.picks))
        name = tomogram.name
        previous = self.predictions.get(name)
        lost = sum(e.count for e in previous.edits.values()) if previous else 0
        self.predictions[name] = Prediction(
            name, model_dir, card, peaks, layer_origin(image), tomogram.voxel_size,
            tomogram.shape, card.class_thresholds(),
            {c.name: Edits() for c in card.classes})
        self._add_layers(self.predictions[name], heat)
        self._show_current()
        for cls in card.classes:
            self.repick(cls.name, self.predictions[name])
        self._refresh_evaluation()  # the table and missed references follow the new model
        self.progress_bar.setFormat("done")
        note = f"; {lost} earlier correction(s) were replaced" if lost else ""
        self._say(f"{name}: {len(peaks.picks)} candidate peaks; move the thresholds, correct "
                  f"with the Points tools, evaluate or export{note}.")

    def _add_layers(self, prediction: Prediction, heat: np.ndarray) -> None:
        """Each class's heatmap and (empty) predicted Points layer, made or updated."""
        grid = prediction.cache.heatmap_grid
        assert grid is not None  # prediction places its heatmaps
        for c, cls in enumerate(prediction.card.classes):
            show_heatmap(self.viewer, prediction.card, c, prediction.tomogram,
                         prediction.origin, heat[c], grid)
            points = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            if points is None:
                points = add_points_layer(self.viewer, empty_picks(), cls, prediction.tomogram,
                                          PREDICTED, prediction.origin)
                self.lifecycle.connect(points.events.data, self._on_points_edited)
            points.visible = True  # hidden when they last became labels

    def _find(self, kind: type, tomogram: str, role: str, class_name: str | None
              ) -> Layer | None:
        return find_layer(self.viewer, kind, tomogram, role, class_name)

    # -- classes, thresholds, corrections --------------------------------------------------------
    def _show_current(self) -> None:
        """Rebuild the class rows for the chosen tomogram's prediction."""
        prediction = self.current
        self.state.current = prediction
        if prediction is None:
            self.thresholds.set_classes([], {}, {})
            return
        shown = {}
        for cls in prediction.card.classes:
            heat = self._find(Image, prediction.tomogram, HEATMAP, cls.name)
            shown[cls.name] = heat is not None and heat.visible
        self.thresholds.set_classes(prediction.card.classes, prediction.thresholds, shown)
        self._update_counts()

    def set_heatmap_visible(self, class_name: str, visible: bool) -> None:
        if self.current is not None:
            layer = self._find(Image, self.current.tomogram, HEATMAP, class_name)
            if layer is not None:
                layer.visible = visible

    def set_threshold(self, class_name: str, value: float) -> None:
        """Re-pick one class at a new threshold from the cached peaks (no inference)."""
        if self.current is None:
            return
        self.current.thresholds[class_name] = float(value)
        slider = self.thresholds.rows[class_name].slider
        if abs(slider.value() - value) > 1e-9:
            slider.setValue(value)  # emits valueChanged, which re-picks
            return
        start = time.perf_counter()
        self.repick(class_name)
        self._refresh_evaluation()
        self.last_repick_ms = (time.perf_counter() - start) * 1000
        self._say(f"{class_name}: threshold {value:.2f}, re-picked in "
                  f"{self.last_repick_ms:.1f} ms")

    def save_thresholds(self) -> None:
        """Store the current tomogram's thresholds in its model directory."""
        prediction = self.current
        if prediction is None:
            self._say("Predict a tomogram first: its thresholds are what gets saved.", True)
            return
        try:
            prediction.card = save_thresholds(prediction.model_dir, prediction.thresholds)
        except (OSError, ValueError) as err:
            self._say(f"Thresholds not saved: {err}", True)
            return
        if self.picker is not None and self.picker.model_dir == prediction.model_dir:
            self.picker = None  # config.json changed: reload it next time
        values = ", ".join(f"{k} {v:.2f}" for k, v in prediction.thresholds.items())
        self._say(f"Saved thresholds to {prediction.model_dir}: {values}")

    def repick(self, class_name: str, prediction: Prediction | None = None) -> None:
        """Show the cached peaks above the threshold, with the user's corrections applied."""
        prediction = prediction or require_prediction(self.current)
        layer = self._find(Points, prediction.tomogram, PREDICTED, class_name)
        if layer is None:
            return
        world, features = prediction.corrected(class_name)
        cls = next(c for c in prediction.card.classes if c.name == class_name)
        with self.own_changes():
            layer.selected_data = set()
            layer.data = to_layer_data(layer, world)
            layer.features = features
            layer.feature_defaults = {"score": 1.0, "peak": USER_POINT}
            layer.border_color = cls.color
            layer.current_border_color = cls.color
            layer.symbol = "disc"  # until evaluated (hit or false pick)
        self._update_counts()

    def _on_points_edited(self, event: Any) -> None:  # a napari event (dynamic fields)
        """Record a user's addition, deletion or move in a predicted layer."""
        if self.state.updating or str(getattr(event, "action", "")) not in ("added", "removed",
                                                                          "changed"):
            return
        layer = event.source
        meta = layer_meta(layer)
        prediction = self.predictions.get(meta.get("tomogram", ""))
        if prediction is None or meta.get("class") not in prediction.edits:
            return
        world = world_points(layer)
        features = layer.features
        if str(event.action) == "added" and len(world):
            # New points copy the features of the last selected point (napari's "current
            # properties"): mark them as the user's own, with full confidence.
            rows = np.asarray(event.data_indices, dtype=int) % len(world)
            features.iloc[rows, features.columns.get_loc("peak")] = USER_POINT
            features.iloc[rows, features.columns.get_loc("score")] = 1.0
        peaks = features["peak"].fillna(USER_POINT).to_numpy(int)
        prediction.record_edits(meta["class"], world, peaks)
        self._update_counts()
        if prediction is self.current:
            self._refresh_evaluation()  # a point added after evaluating is counted

    def _update_counts(self) -> None:
        prediction = self.current
        if prediction is None:
            return
        series = []
        for cls in prediction.card.classes:
            layer = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            self.thresholds.set_count(cls.name, 0 if layer is None else len(layer.data),
                                      prediction.edits[cls.name].count)
            series.append((cls.color, prediction.scores(cls.name),
                           prediction.thresholds[cls.name]))
        self.histogram.set_series(series)

    def predicted_picks(self, class_name: str | None = None) -> pd.DataFrame:
        """The current (thresholded and corrected) picks of the chosen tomogram, Angstrom."""
        return current_picks(self.viewer, self.current, class_name)

    # -- corrections as labels -----------------------------------------------------------------
    def use_corrections_as_labels(self) -> int:
        """Merge the predicted points into this tomogram's picks layers (role ``picks``).

        Existing picks stay; a prediction within half a radius of one is not added twice.
        The predicted layers are hidden. Returns the number of picks added.
        """
        return merge_into_labels(self.viewer, require_prediction(self.current))

    def labels_summary(self) -> str:
        """What "Use corrections as labels" would add: points per class and thresholds."""
        prediction = require_prediction(self.current)
        parts = []
        for cls in prediction.card.classes:
            layer = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            count = 0 if layer is None else len(layer.data)
            parts.append(f"{cls.name}: {count} (score above "
                         f"{prediction.thresholds[cls.name]:.2f}, "
                         f"{prediction.edits[cls.name].count} corrections)")
        return "\n".join(parts)

    def _on_labels_clicked(self) -> None:
        try:
            summary = self.labels_summary()
        except ValueError as err:
            self._say(str(err), error=True)
            return
        prediction = require_prediction(self.current)
        then = (" and fine-tune the model with them in the Training dock"
                if self.finetune_check.isChecked() else "")
        answer = QMessageBox.question(
            self, "Use corrections as labels",
            f"Add these picks as labels of {prediction.tomogram}{then}? Picks already there "
            f"stay; one within half a radius of a label is not added twice.\n\n{summary}")
        if answer != QMessageBox.StandardButton.Yes:
            self._say("No labels added.")
            return
        added = self.use_corrections_as_labels()
        dock = self._link_training_dock()
        if self.finetune_check.isChecked() and dock is not None and not dock.running:
            started = dock.fine_tune(prediction.model_dir, prediction.tomogram)
            self._say(f"{added} picks added as labels; " + (
                "fine-tuning started in the Training dock." if started else
                f"fine-tuning could not start: {dock.status.text()}"), error=not started)
        else:
            self._say(f"{added} picks added as labels of {prediction.tomogram}; open the "
                      "Training dock and press Start to (re)train with them.")

    # -- evaluation and export (see EvaluationPanel, ExportPanel) ------------------------------
    @property
    def evaluation(self) -> Evaluation | None:
        """The last evaluation of the current picks (None until Evaluate)."""
        return self.evaluation_panel.evaluation

    @evaluation.setter
    def evaluation(self, value: Evaluation | None) -> None:
        self.evaluation_panel.evaluation = value

    def evaluate(self) -> Evaluation:
        """Score the current picks, colour them TP/FP, show missed references and a table."""
        return self.evaluation_panel.evaluate()

    def _refresh_evaluation(self) -> None:
        """Evaluate again after the picks changed, if they were evaluated (else nothing)."""
        if self.evaluation is not None:
            self.evaluation_panel.refresh()

    def set_reference_file(self, path: str | Path | None) -> None:
        """Evaluate against a picks file instead of reference layers (None: layers again)."""
        self.evaluation_panel.set_reference_file(path)

    def reference_picks(self) -> pd.DataFrame:
        """Reference picks of the chosen tomogram: from the file, else from its layers."""
        return self.evaluation_panel.reference_picks(require_prediction(self.current))

    def export(self, path: str | Path, format: str = "csv", class_name: str | None = None
               ) -> pd.DataFrame:
        """Write the current picks (one class or all) to ``path``; keeps ``<name>.bak``."""
        return self.export_panel.export(path, format, class_name)

    def _on_dock_closed(self) -> None:
        """The dock or its window closes: stop a running prediction and wait for it."""
        if self._worker is not None:
            self._worker.stop_and_wait()
            self._worker = None

"""Prediction dock: pick a tomogram, tune thresholds live, correct, evaluate and export.

Prediction runs in a napari worker; its peaks are cached (:class:`PeakCache`), so a
threshold slider only filters them and updates the Points layer in place. Corrections
made with napari's Points tools (add, delete, move) are remembered per class and survive
threshold changes; they can become training labels for the training dock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
import pandas as pd
import torch
from napari.layers import Image, Layer, Points
from napari.qt.threading import create_worker
from napari.utils.colormaps import Colormap
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtCore import QObject, QPointF, Qt
from qtpy.QtCore import Signal as QtSignal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from scipy.spatial import cKDTree
from superqt import QLabeledDoubleSlider

from ..checkpoint import WEIGHTS, ModelCard, load_model
from ..classes import ParticleClass
from ..heatmap import output_to_input
from ..io.formats import read_picks, write_picks
from ..io.picks import empty_picks
from ..io.tomogram import Tomogram
from ..layers import META, PICKS, PREDICTED, REFERENCE, points_layer
from ..metrics import CZII_BETA, CZII_DISTANCE_FACTOR, Evaluation, evaluate, match_picks
from ..predict import PEAK_FLOOR, PeakCache, PredictConfig, pick_tomogram
from ..train import resolve_device
from .training import (
    DEVICES,
    TrainingWidget,
    image_tomogram,
    layer_meta,
    layer_origin,
    layer_picks,
    role_layers,
    tomogram_images,
    tomogram_name,
)

HEATMAP = "heatmap"
MISSED = "missed"
TP_COLOR, FP_COLOR, FN_COLOR = "#2ecc40", "#ff4136", "#ffdc00"
#: (label, format for io.formats.write_picks, file suffix)
EXPORT_FORMATS = (("CZII CSV", "csv", ".csv"), ("RELION 5 STAR", "relion5", ".star"),
                  ("RELION 4 STAR", "relion4", ".star"), ("coords", "coords", ".coords"),
                  ("copick picks JSON (one class)", "copick", ".json"))
TABLE_COLUMNS = ("class", "pred", "ref", "TP", "FP", "FN", "prec.", "recall", "F1",
                 f"F{CZII_BETA:g}")


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


def run_prediction(model_dir: Path, cached: tuple[torch.nn.Module, ModelCard] | None,
                   tomogram: Tomogram, config: PredictConfig, device_name: str,
                   on_progress: Callable[[int, int], None], should_stop: Callable[[], bool]
                   ) -> tuple[torch.nn.Module, ModelCard, PeakCache, np.ndarray]:
    """Load the model (unless cached) and pick one tomogram; runs in the worker thread."""
    device = resolve_device(device_name)
    model, card = cached if cached is not None else load_model(model_dir, device)
    model.to(device)
    volume = Tomogram(np.asarray(tomogram.data), tomogram.voxel_size, tomogram.name)
    peaks, heat = pick_tomogram(model, card, volume, config, device, on_progress, should_stop)
    return model, card, peaks, heat.float().cpu().numpy()


def add_points_layer(viewer: napari.Viewer, table: pd.DataFrame, cls: ParticleClass,
                     tomogram: str, role: str, origin: np.ndarray) -> Points:
    """Add one class's Points layer (made by :func:`points_layer`) at the tomogram's origin.

    napari >= 0.9 draws points only within the slice thickness: points are drawn as the
    sphere's cross-section, and slices are made at least one radius thick on each side.
    """
    data, attrs, _ = points_layer(table, cls, tomogram, role)
    attrs.pop("out_of_slice_display", None)  # deprecated in napari 0.9
    attrs.update(projection_mode="rescale_spherical", translate=tuple(origin),
                 feature_defaults={"score": 1.0})
    dims = viewer.dims
    dims.margin_left = tuple(max(m, cls.radius_A) for m in dims.margin_left)
    dims.margin_right = tuple(max(m, cls.radius_A) for m in dims.margin_right)
    return viewer.add_layer(Layer.create(data, attrs, "points"))


class _Relay(QObject):
    progress = QtSignal(int, int)


class ScoreHistogram(QWidget):
    """Score histograms of the cached peaks, one outline per class, thresholds dashed."""

    BINS = np.linspace(PEAK_FLOOR, 1.0, 20)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series: list[tuple[str, np.ndarray, float]] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def set_series(self, series: list[tuple[str, np.ndarray, float]]) -> None:
        """(colour, scores, threshold) per class."""
        self.series = series
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#1e1e1e"))
        painter.setPen(QColor("#aaaaaa"))
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
            painter.setPen(QPen(QColor(color), 1, Qt.DashLine))
            painter.drawLine(QPointF(x, top), QPointF(x, top + height))


class PredictionWidget(QWidget):
    """Predict picks with a trained model, then QC (thresholds, evaluation) and export."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.predictions: dict[str, Prediction] = {}
        self.evaluation: Evaluation | None = None
        self.last_repick_ms: float | None = None
        self._reference_file: pd.DataFrame | None = None
        self._model_cache: tuple | None = None  # (dir, mtime, device, model, card)
        self._worker = None
        self._job: tuple | None = None
        self._stop = threading.Event()
        self._updating = False
        self._rows: dict[str, tuple[QCheckBox, QLabeledDoubleSlider, QLabel]] = {}
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()
        self._link_training_dock()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        model_row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("model folder (or train one in the Training dock)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._choose_model)
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
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
        form.addRow(self.tta_check)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._stop.set)
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        layout.addWidget(self.progress_bar)

        picks_box = QGroupBox("Picks per class: heatmap, threshold, count")
        picks_layout = QVBoxLayout(picks_box)
        self.rows_grid = QGridLayout()
        picks_layout.addLayout(self.rows_grid)
        self.histogram = ScoreHistogram()
        picks_layout.addWidget(self.histogram)
        self.labels_button = QPushButton("Use corrections as labels")
        self.labels_button.setToolTip("Copy the predicted (and corrected) points into picks "
                                      "layers of this tomogram, for the Training dock")
        self.labels_button.clicked.connect(self._on_labels_clicked)
        self.finetune_check = QCheckBox("then fine-tune in the Training dock")
        picks_layout.addWidget(self.labels_button)
        picks_layout.addWidget(self.finetune_check)
        layout.addWidget(picks_box)

        eval_box = QGroupBox("Evaluation (CZII hit rule, 0.5 x radius)")
        eval_layout = QVBoxLayout(eval_box)
        ref_row = QHBoxLayout()
        self.reference_label = QLabel("reference: layers of role 'reference'")
        ref_file = QPushButton("File…")
        ref_file.clicked.connect(self._choose_reference)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.clicked.connect(self._on_evaluate_clicked)
        ref_row.addWidget(self.reference_label, 1)
        ref_row.addWidget(ref_file)
        ref_row.addWidget(self.evaluate_button)
        eval_layout.addLayout(ref_row)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMinimumHeight(110)
        eval_layout.addWidget(self.table)
        layout.addWidget(eval_box)

        export_box = QGroupBox("Export")
        export_layout = QHBoxLayout(export_box)
        self.scope_combo = QComboBox()
        self.scope_combo.addItem("all classes")
        self.format_combo = QComboBox()
        self.format_combo.addItems([label for label, _, _ in EXPORT_FORMATS])
        export_button = QPushButton("Export…")
        export_button.clicked.connect(self._choose_export)
        export_layout.addWidget(self.scope_combo)
        export_layout.addWidget(self.format_combo)
        export_layout.addWidget(export_button)
        layout.addWidget(export_box)
        self.status = QLabel("Choose a model and a tomogram, then Predict.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        layout.addStretch()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #ff6b6b;" if error else "")
        self.status.setText(text)

    def _refresh_images(self, event: object = None) -> None:
        current = self.image_combo.currentText()
        names = [image.name for image in tomogram_images(self.viewer)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._show_current()

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
        if dock is not None:
            dock.model_ready.connect(self._on_model_ready, unique=True)
            if dock.last_model_dir is not None and not self.model_edit.text():
                self.model_edit.setText(str(dock.last_model_dir))
        return dock

    def _on_model_ready(self, model_dir: str) -> None:
        self.model_edit.setText(model_dir)
        self._say(f"Model from the Training dock: {model_dir}")

    def _choose_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.model_edit.setText(path)

    def _image(self) -> Image | None:
        name = self.image_combo.currentText()
        return next((i for i in tomogram_images(self.viewer) if i.name == name), None)

    @property
    def current(self) -> Prediction | None:
        """The prediction of the tomogram chosen in the dock, if it was predicted."""
        image = self._image()
        return None if image is None else self.predictions.get(tomogram_name(image))

    # -- predicting ------------------------------------------------------------------------------
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
        key = (model_dir, (model_dir / WEIGHTS).stat().st_mtime, device)
        cached = self._model_cache[3:] if self._model_cache and self._model_cache[:3] == key \
            else None
        config = PredictConfig(window=self.window_spin.value(), tta=self.tta_check.isChecked())
        self._stop.clear()
        self.predict_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress_bar.setFormat("loading…")
        self._say(f"Picking {tomogram.name} with {model_dir.name}…")
        self._job = (key, image, tomogram)
        self._worker = create_worker(
            run_prediction, model_dir, cached, tomogram, config, device,
            self._relay.progress.emit, self._stop.is_set,
            _connect={"returned": self._on_predicted, "errored": self._on_error,
                      "finished": self._on_finished})

    def _on_progress(self, done: int, total: int) -> None:
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

    def _on_predicted(self, result: tuple) -> None:
        model, card, peaks, heat = result
        key, image, tomogram = self._job
        self._model_cache = (*key, model, card)
        peaks.picks["peak"] = np.arange(len(peaks.picks))
        name = tomogram.name
        previous = self.predictions.get(name)
        lost = sum(e.count for e in previous.edits.values()) if previous else 0
        self.predictions[name] = Prediction(
            name, key[0], card, peaks, layer_origin(image), tomogram.voxel_size,
            tomogram.shape, {c.name: card.threshold(c.name) for c in card.classes},
            {c.name: Edits() for c in card.classes})
        self.evaluation = None
        self._add_heatmaps(self.predictions[name], heat)
        self._show_current()
        for cls in card.classes:
            self.repick(cls.name, self.predictions[name])
        self.progress_bar.setFormat("done")
        note = f"; {lost} earlier correction(s) were replaced" if lost else ""
        self._say(f"{name}: {len(peaks.picks)} candidate peaks; move the thresholds, correct "
                  f"with the Points tools, evaluate or export{note}.")

    def _add_heatmaps(self, prediction: Prediction, heat: np.ndarray) -> None:
        card = prediction.card
        stride = card.model.output_stride
        scale = (card.voxel_size * stride,) * 3  # heatmaps live on the model's output grid
        translate = tuple(prediction.origin + float(output_to_input(0, stride)) * card.voxel_size)
        for c, cls in enumerate(card.classes):
            layer = self._find(Image, prediction.tomogram, HEATMAP, cls.name)
            if layer is None:
                rgb = transform_color(cls.color)[0][:3]
                self.viewer.add_image(
                    heat[c], name=f"{cls.name} heatmap", blending="additive",
                    colormap=Colormap([[*rgb, 0.0], [*rgb, 1.0]],
                                      name=f"semietpicker {cls.name}"),
                    contrast_limits=(0.0, 1.0), scale=scale, translate=translate,
                    units="angstrom",
                    metadata={META: {"class": cls.name, "tomogram": prediction.tomogram,
                                     "role": HEATMAP}})
            else:
                layer.data, layer.scale, layer.translate = heat[c], scale, translate
            points = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            if points is None:
                points = add_points_layer(self.viewer, empty_picks(), cls, prediction.tomogram,
                                          PREDICTED, prediction.origin)
                points.events.data.connect(self._on_points_edited)

    def _find(self, kind: type, tomogram: str, role: str, class_name: str | None) -> Layer | None:
        return next((layer for layer in self.viewer.layers if isinstance(layer, kind)
                     and layer_meta(layer).get("tomogram") == tomogram
                     and layer_meta(layer).get("role") == role
                     and layer_meta(layer).get("class") == class_name), None)

    # -- classes, thresholds, corrections --------------------------------------------------------
    def _show_current(self) -> None:
        """Rebuild the class rows for the chosen tomogram's prediction."""
        prediction = self.current
        while self.rows_grid.count():
            self.rows_grid.takeAt(0).widget().deleteLater()
        self._rows.clear()
        self.scope_combo.clear()
        self.scope_combo.addItem("all classes")
        if prediction is None:
            self.histogram.set_series([])
            return
        for i, cls in enumerate(prediction.card.classes):
            visible = QCheckBox(cls.name)
            visible.setStyleSheet(f"color: {cls.color};")
            visible.setToolTip("show this class's heatmap")
            heat = self._find(Image, prediction.tomogram, HEATMAP, cls.name)
            visible.setChecked(heat is not None and heat.visible)
            visible.toggled.connect(lambda on, name=cls.name: self.set_heatmap_visible(name, on))
            slider = QLabeledDoubleSlider(Qt.Horizontal)
            slider.setRange(PEAK_FLOOR, 1.0)
            slider.setDecimals(2)
            slider.setSingleStep(0.01)
            slider.setValue(prediction.thresholds[cls.name])
            slider.valueChanged.connect(lambda v, name=cls.name: self.set_threshold(name, v))
            count = QLabel()
            for column, widget in enumerate((visible, slider, count)):
                self.rows_grid.addWidget(widget, i, column)
            self._rows[cls.name] = (visible, slider, count)
            self.scope_combo.addItem(cls.name)
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
        _, slider, _ = self._rows[class_name]
        if abs(slider.value() - value) > 1e-9:
            slider.setValue(value)  # emits valueChanged, which re-picks
            return
        start = time.perf_counter()
        self.repick(class_name)
        if self.evaluation is not None:
            try:
                self.evaluate()
            except ValueError:
                self.evaluation = None
        self.last_repick_ms = (time.perf_counter() - start) * 1000
        self._say(f"{class_name}: threshold {value:.2f}, re-picked in "
                  f"{self.last_repick_ms:.1f} ms")

    def repick(self, class_name: str, prediction: Prediction | None = None) -> None:
        """Show the cached peaks above the threshold, with the user's corrections applied."""
        prediction = prediction or self.current
        layer = self._find(Points, prediction.tomogram, PREDICTED, class_name)
        if layer is None:
            return
        table = prediction.cache.at({class_name: prediction.thresholds[class_name]})
        edits = prediction.edits[class_name]
        table = table[~table["peak"].isin(edits.removed)]
        ids = table["peak"].to_numpy(int)
        world = table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3) + prediction.origin
        for row, peak in enumerate(ids):
            if peak in edits.moved:
                world[row] = edits.moved[peak]
        prediction.shown[class_name] = dict(zip(ids.tolist(), world))
        data = np.concatenate([world, edits.added]) - np.asarray(layer.translate[-3:])
        features = pd.DataFrame({
            "score": np.concatenate([table["score"].to_numpy(float), np.ones(len(edits.added))]),
            "peak": np.concatenate([ids, np.full(len(edits.added), -1)])})
        cls = next(c for c in prediction.card.classes if c.name == class_name)
        self._updating = True
        try:
            layer.selected_data = set()
            layer.data = data
            layer.features = features
            layer.feature_defaults = {"score": 1.0, "peak": -1}
            layer.border_color = cls.color
            layer.current_border_color = cls.color
        finally:
            self._updating = False
        self._update_counts()

    def _on_points_edited(self, event: object) -> None:
        """Record a user's addition, deletion or move in a predicted layer."""
        if self._updating or str(getattr(event, "action", "")) not in ("added", "removed",
                                                                          "changed"):
            return
        layer = event.source
        meta = layer_meta(layer)
        prediction = self.predictions.get(meta.get("tomogram"))
        if prediction is None or meta.get("class") not in prediction.edits:
            return
        name = meta["class"]
        edits, shown = prediction.edits[name], prediction.shown.get(name, {})
        world = np.asarray(layer.data, float).reshape(-1, 3) + np.asarray(layer.translate[-3:])
        features = layer.features
        if str(event.action) == "added" and len(world):
            # New points copy the features of the last selected point (napari's "current
            # properties"): mark them as the user's own, with full confidence.
            rows = np.asarray(event.data_indices, dtype=int) % len(world)
            features.iloc[rows, features.columns.get_loc("peak")] = -1
            features.iloc[rows, features.columns.get_loc("score")] = 1.0
        peaks = features["peak"].fillna(-1).to_numpy(int)
        edits.removed |= set(shown) - set(peaks[peaks >= 0].tolist())
        for peak, position in zip(peaks, world):
            if peak >= 0 and peak in shown and not np.allclose(position, shown[peak]):
                edits.moved[int(peak)] = position
        edits.added = world[peaks < 0]
        self._update_counts()

    def _update_counts(self) -> None:
        prediction = self.current
        if prediction is None:
            return
        series = []
        for cls in prediction.card.classes:
            layer = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            if cls.name in self._rows:
                edits = prediction.edits[cls.name].count
                n = 0 if layer is None else len(layer.data)
                self._rows[cls.name][2].setText(
                    f"{n} pick{'s' if n != 1 else ''}"
                    + (f", {edits} edit{'s' if edits != 1 else ''}" if edits else ""))
            scores = prediction.cache.picks.loc[
                prediction.cache.picks["particle_type"] == cls.name, "score"].to_numpy(float)
            series.append((cls.color, scores, prediction.thresholds[cls.name]))
        self.histogram.set_series(series)

    def predicted_picks(self, class_name: str | None = None) -> pd.DataFrame:
        """The current (thresholded and corrected) picks of the chosen tomogram, Angstrom."""
        prediction = self.current
        if prediction is None:
            raise ValueError("Predict this tomogram first.")
        tables = [layer_picks(layer, prediction.origin, prediction.tomogram)
                  for layer in role_layers(self.viewer, prediction.tomogram, PREDICTED)
                  if class_name in (None, layer_meta(layer)["class"])]
        return pd.concat(tables, ignore_index=True) if tables else empty_picks()

    # -- corrections as labels -----------------------------------------------------------------
    def use_corrections_as_labels(self) -> int:
        """Merge the predicted points into this tomogram's picks layers (role ``picks``).

        Existing picks stay; a prediction within half a radius of one is not added twice.
        The predicted layers are hidden. Returns the number of picks added.
        """
        prediction = self.current
        if prediction is None:
            raise ValueError("Predict this tomogram first.")
        added = 0
        for cls in prediction.card.classes:
            predicted = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
            if predicted is None:
                continue
            new = layer_picks(predicted, prediction.origin, prediction.tomogram)
            target = self._find(Points, prediction.tomogram, PICKS, cls.name)
            if target is None:
                add_points_layer(self.viewer, new, cls, prediction.tomogram, PICKS,
                                 prediction.origin)
                added += len(new)
            else:
                old = layer_picks(target, prediction.origin, prediction.tomogram)
                zyx = new[["z", "y", "x"]].to_numpy(float)
                if len(old) and len(zyx):
                    far = cKDTree(old[["z", "y", "x"]].to_numpy(float)).query(zyx)[0] \
                        > CZII_DISTANCE_FACTOR * cls.radius_A
                    zyx = zyx[far]
                if len(zyx):
                    world = zyx + prediction.origin
                    target.add((world - np.asarray(target.translate[-3:])) /
                               np.asarray(target.scale[-3:]))
                added += len(zyx)
            predicted.visible = False
        return added

    def _on_labels_clicked(self) -> None:
        try:
            added = self.use_corrections_as_labels()
        except ValueError as err:
            self._say(str(err), error=True)
            return
        prediction = self.current
        dock = self._link_training_dock()
        if self.finetune_check.isChecked() and dock is not None and not dock.running:
            started = dock.fine_tune(prediction.model_dir, prediction.tomogram)
            self._say(f"{added} picks added as labels; " + (
                "fine-tuning started in the Training dock." if started else
                f"fine-tuning could not start: {dock.status.text()}"), error=not started)
        else:
            self._say(f"{added} picks added as labels of {prediction.tomogram}; open the "
                      "Training dock and press Start to (re)train with them.")

    # -- evaluation ------------------------------------------------------------------------------
    def _choose_reference(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference picks", "",
                                              "Picks (*.csv *.star *.json *.coords)")
        if path:
            try:
                self.set_reference_file(path)
            except (ValueError, OSError) as err:
                self._say(str(err), error=True)

    def set_reference_file(self, path: str | Path | None) -> None:
        """Evaluate against a picks file instead of reference layers (None: layers again)."""
        if path is None:
            self._reference_file = None
            self.reference_label.setText("reference: layers of role 'reference'")
            return
        self._reference_file = read_picks(path)
        self.reference_label.setText(f"reference: {Path(path).name}")

    def reference_picks(self) -> pd.DataFrame:
        """Reference picks of the chosen tomogram: from the file, else from its layers."""
        prediction = self.current
        if self._reference_file is not None:
            own = self._reference_file["experiment"] == prediction.tomogram
            return self._reference_file[own].reset_index(drop=True)
        tables = [layer_picks(layer, prediction.origin, prediction.tomogram)
                  for layer in role_layers(self.viewer, prediction.tomogram, REFERENCE)]
        return pd.concat(tables, ignore_index=True) if tables else empty_picks()

    def _on_evaluate_clicked(self) -> None:
        try:
            self.evaluate()
        except ValueError as err:
            self._say(str(err), error=True)

    def evaluate(self) -> Evaluation:
        """Score the current picks, colour them TP/FP, show missed references and a table."""
        prediction = self.current
        if prediction is None:
            raise ValueError("Predict this tomogram first.")
        reference = self.reference_picks()
        if reference.empty:
            raise ValueError(f"No reference picks for {prediction.tomogram}: open a reference "
                             "picks file or add Points layers of role 'reference'.")
        classes = prediction.card.classes
        names = {c.name for c in classes}
        ignored = sorted(set(reference["particle_type"]) - names)
        reference = reference[reference["particle_type"].isin(names)]
        predicted = self.predicted_picks()
        self.evaluation = evaluate(predicted, reference, classes)
        missed = [self._colour_hits(prediction, cls, predicted, reference) for cls in classes]
        self._show_missed(prediction, classes, missed)
        self._fill_table(self.evaluation)
        note = f" (ignored reference classes {', '.join(ignored)})" if ignored else ""
        self._say(f"CZII score {self.evaluation.score:.3f}{note}")
        return self.evaluation

    def _colour_hits(self, prediction: Prediction, cls: ParticleClass, predicted: pd.DataFrame,
                     reference: pd.DataFrame) -> pd.DataFrame:
        """Colour one class's predicted points TP/FP; return its missed references."""
        pred = predicted[predicted["particle_type"] == cls.name]
        ref = reference[reference["particle_type"] == cls.name]
        pred_hit, ref_hit = match_picks(pred[["z", "y", "x"]].to_numpy(float),
                                        ref[["z", "y", "x"]].to_numpy(float),
                                        CZII_DISTANCE_FACTOR * cls.radius_A)
        layer = self._find(Points, prediction.tomogram, PREDICTED, cls.name)
        if layer is not None and len(layer.data):
            self._updating = True
            try:
                layer.border_color = np.where(pred_hit[:, None], transform_color(TP_COLOR),
                                              transform_color(FP_COLOR))
            finally:
                self._updating = False
        return ref[~ref_hit]

    def _show_missed(self, prediction: Prediction, classes: list[ParticleClass],
                     missed: list[pd.DataFrame]) -> None:
        table = pd.concat(missed, ignore_index=True)
        radius = {c.name: c.radius_A for c in classes}
        data = table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3)
        sizes = 2 * table["particle_type"].map(radius).to_numpy(float)
        features = pd.DataFrame({"particle_type": table["particle_type"].to_numpy(str)})
        layer = self._find(Points, prediction.tomogram, MISSED, None)
        if layer is None:
            layer = self.viewer.add_points(
                data, name=f"missed references {prediction.tomogram}",
                size=sizes if len(data) else 10.0,
                face_color="transparent", border_color=FN_COLOR, border_width=0.12,
                features=features, translate=tuple(prediction.origin), units="angstrom",
                projection_mode="rescale_spherical",  # as the picks layers
                metadata={META: {"tomogram": prediction.tomogram, "role": MISSED}})
        else:
            layer.data = data
            layer.features = features
            if len(data):
                layer.size = sizes
                layer.border_color = FN_COLOR

    def _fill_table(self, evaluation: Evaluation) -> None:
        rows = evaluation.per_class.to_dict(orient="records")
        self.table.setRowCount(len(rows) + 1)
        for r, values in enumerate(rows):
            cells = [values["particle_type"], values["n_pred"], values["n_ref"],
                     values["tp_0.5"], values["fp_0.5"], values["fn_0.5"],
                     values["precision_0.5"], values["recall_0.5"], values["f1_0.5"],
                     values["fbeta"]]
            for c, value in enumerate(cells):
                text = f"{value:.3f}" if isinstance(value, float) else str(value)
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.setItem(len(rows), 0, QTableWidgetItem("CZII score"))
        self.table.setItem(len(rows), len(TABLE_COLUMNS) - 1,
                           QTableWidgetItem(f"{evaluation.score:.3f}"))
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth() + sum(
            self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setMinimumHeight(min(height + 16, 320))  # + room for a scroll bar

    def closeEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        """Closing the dock stops a running prediction."""
        self._stop.set()
        super().closeEvent(event)

    # -- export ----------------------------------------------------------------------------------
    def export(self, path: str | Path, format: str = "csv", class_name: str | None = None
               ) -> pd.DataFrame:
        """Write the current picks (one class or all) to ``path``; keeps ``<name>.bak``."""
        prediction = self.current
        picks = self.predicted_picks(class_name)
        write_picks(picks, path, format=format, voxel_size=prediction.voxel_size,
                    shape_by_experiment={prediction.tomogram: prediction.shape},
                    keep_previous=True)
        return picks

    def _choose_export(self) -> None:
        label, fmt, suffix = EXPORT_FORMATS[self.format_combo.currentIndex()]
        path, _ = QFileDialog.getSaveFileName(self, "Export picks", "", f"{label} (*{suffix})")
        if not path:
            return
        scope = self.scope_combo.currentText()
        try:
            picks = self.export(path, fmt, None if scope == "all classes" else scope)
        except (ValueError, OSError) as err:
            self._say(f"Export failed: {err}", error=True)
            return
        self._say(f"Wrote {len(picks)} picks to {path}")

"""Training dock: labelled and unlabelled tomograms from the viewer, a worker thread, a loss plot.

The widget only gathers inputs and shows progress; :class:`~napari_semietpicker.train.Trainer`
does the work in a napari worker thread. Progress crosses threads through a Qt signal, the
Stop button sets a flag the training loop checks every step, and a timer measures how late
the event loop runs while training (the viewer must stay responsive).
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Points
from napari.qt.threading import create_worker
from psygnal import Signal
from qtpy.QtCore import QElapsedTimer, QObject, QPointF, Qt, QTimer
from qtpy.QtCore import Signal as QtSignal
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..checkpoint import CONFIG, TRAINER_STATE, WEIGHTS, load_card
from ..classes import PRESETS as CLASS_PRESETS
from ..classes import ParticleClass
from ..data import prepare_volume
from ..io.formats import read_any_tomogram
from ..io.tomogram import Tomogram
from ..layers import META, PICKS, picks_from_layer
from ..model import PRESETS
from ..train import TrainConfig, Trainer, TrainProgress, TrainResult

DEVICES = ("auto", "cuda", "mps", "cpu")
LOSS_COLOR = "#4fc3f7"
UNLABELLED_LOSS_COLOR = "#ffb74d"


# -- layers <-> core objects (shared with the prediction dock) --------------------------------


def layer_meta(layer: object) -> dict:
    """Our metadata block of a layer ({} for layers we did not make)."""
    meta = getattr(layer, "metadata", None) or {}
    block = meta.get(META, {})
    return block if isinstance(block, dict) else {}


def tomogram_name(image: Image) -> str:
    """The tomogram name picks refer to: the one in the metadata, else the layer name."""
    return str(layer_meta(image).get("tomogram") or image.name)


def tomogram_images(viewer: napari.Viewer) -> list[Image]:
    """3D Image layers that are tomograms (not heatmaps or other derived images)."""
    return [layer for layer in viewer.layers
            if isinstance(layer, Image) and layer.ndim == 3 and "role" not in layer_meta(layer)]


def role_layers(viewer: napari.Viewer, tomogram: str, role: str) -> list[Points]:
    """Points layers of one tomogram and role (picks, predicted, reference), in layer order."""
    return [layer for layer in viewer.layers
            if isinstance(layer, Points) and layer_meta(layer).get("role") == role
            and layer_meta(layer).get("tomogram") == tomogram and "class" in layer_meta(layer)]


def image_voxel_size(image: Image) -> float:
    """Voxel size in Angstrom: the image's scale (isotropic), as the reader sets it."""
    scale = np.asarray(image.scale[-3:], dtype=float)
    if not np.allclose(scale, scale[0], rtol=0.01):
        raise ValueError(f"{image.name}: voxels must be cubic, the layer scale is "
                         f"{tuple(scale)}")
    return float(scale[0])


def image_tomogram(image: Image) -> Tomogram:
    """A Tomogram view of an Image layer (level 0 of a pyramid; data not copied)."""
    data = image.data[0] if image.multiscale else image.data
    return Tomogram(data, image_voxel_size(image), tomogram_name(image))


def layer_origin(image: Image) -> np.ndarray:
    """World position (Angstrom) of voxel (0, 0, 0): picks are relative to it."""
    return np.asarray(image.translate[-3:], dtype=float)


def layer_picks(layer: Points, origin: np.ndarray, experiment: str) -> pd.DataFrame:
    """A Points layer's points as a picks table in Angstrom from the tomogram corner."""
    world = np.asarray(layer.data, dtype=float).reshape(-1, 3) * np.asarray(layer.scale[-3:]) \
        + np.asarray(layer.translate[-3:])
    return picks_from_layer(world - origin, layer.metadata, layer.features, experiment)


def class_of_layer(layer: Points) -> ParticleClass:
    """The particle class a picks layer stands for (name, radius, colour in its metadata).

    The layers carry no score weight: it comes from the metadata if present, else from
    the preset class of the same name (e.g. CZII beta-amylase: 0), else 1.
    """
    meta = layer_meta(layer)
    if "radius_A" not in meta:
        raise ValueError(f"layer {layer.name!r} has no particle radius in its metadata; make "
                         "picks layers with the annotation dock or open a picks file")
    name = str(meta["class"])
    known = {c.name: c for preset in CLASS_PRESETS.values() for c in preset}
    weight = meta.get("weight", known[name].weight if name in known else 1.0)
    return ParticleClass(name, float(meta["radius_A"]), float(weight),
                         str(meta.get("color", "#ffffff")))


def classes_of_layers(layers: Iterable[Points]) -> list[ParticleClass]:
    """Classes of picks layers, first seen first; one name with two radii is refused."""
    found: dict[str, ParticleClass] = {}
    for layer in layers:
        cls = class_of_layer(layer)
        known = found.setdefault(cls.name, cls)
        if not math.isclose(known.radius_A, cls.radius_A, rel_tol=1e-3):
            raise ValueError(f"class {cls.name!r} has two radii in the picks layers "
                             f"({known.radius_A:g} and {cls.radius_A:g} A): make them agree")
    return list(found.values())


def format_duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for ETAs."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# -- small Qt pieces ----------------------------------------------------------------------


class _Relay(QObject):
    """Carries progress reports from the worker thread to the GUI thread (queued)."""

    progress = QtSignal(object)


class LatenessProbe(QObject):
    """Measures event-loop delay: a timer due every ``interval_ms`` records how late it fires."""

    def __init__(self, interval_ms: int = 50, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.lateness_ms: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.PreciseTimer)
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


class LossPlot(QWidget):
    """The training loss per step on a log scale (labelled loss and, if any, unlabelled)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.losses: list[float] = []
        self.unlabelled: list[float] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def clear(self) -> None:
        self.losses, self.unlabelled = [], []
        self.update()

    def add(self, loss: float, loss_unlabelled: float | None = None) -> None:
        self.losses.append(float(loss))
        if loss_unlabelled is not None:
            self.unlabelled.append(float(loss_unlabelled))
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.fillRect(self.rect(), QColor("#1e1e1e"))
        painter.setPen(QColor("#aaaaaa"))
        values = np.asarray([v for v in self.losses + self.unlabelled if v > 0 and
                             math.isfinite(v)])
        if not len(values):
            painter.drawText(self.rect(), Qt.AlignCenter, "loss (log scale) appears here")
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


# -- the job that runs in the worker thread ------------------------------------------------


@dataclass
class TrainJob:
    """Everything a training run needs, gathered on the GUI thread (no Qt objects inside)."""

    config: TrainConfig
    classes: list[ParticleClass]
    labelled: list[tuple[Tomogram, pd.DataFrame]]
    unlabelled: list[Tomogram | Path]
    out_dir: Path
    resume: bool = False
    notes: list[str] = field(default_factory=list)


def run_job(job: TrainJob, on_progress: Callable[[TrainProgress], None],
            should_stop: Callable[[], bool]) -> TrainResult:
    """Prepare the volumes and train (in the worker thread: normalising can take seconds)."""
    labelled = [prepare_volume(Tomogram(np.asarray(t.data), t.voxel_size, t.name), picks,
                               job.classes) for t, picks in job.labelled]
    unlabelled = []
    for source in job.unlabelled:
        tomogram = read_any_tomogram(source) if isinstance(source, Path) else source
        unlabelled.append(prepare_volume(
            Tomogram(np.asarray(tomogram.data), tomogram.voxel_size, tomogram.name)))
        if should_stop():
            return TrainResult(0, True, "stopped")
    trainer = Trainer(job.config, job.classes, labelled, job.out_dir, unlabelled,
                      resume=job.resume)
    return trainer.run(on_progress=on_progress, should_stop=should_stop)


# -- the dock -----------------------------------------------------------------------------


class TrainingWidget(QWidget):
    """Train a picker on the viewer's annotated tomograms; Stop keeps the last good model.

    ``model_ready`` is emitted with the model folder whenever a model is trained or loaded,
    so the prediction dock can use it; ``last_model_dir`` holds the latest one.
    """

    model_ready = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.last_model_dir: Path | None = None
        self.result: TrainResult | None = None
        self._worker = None
        self._stop = threading.Event()
        self._stop_asked_at: float | None = None
        self.stop_latency_s: float | None = None
        self._job: TrainJob | None = None
        self._files: list[Path] = []
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress)
        self.probe = LatenessProbe(parent=self)
        self._build()
        for layer in self.viewer.layers:
            self._watch(layer)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.refresh()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Labelled tomograms (with picks layers):"))
        self.labelled_list = QListWidget()
        self.labelled_list.setMaximumHeight(90)
        self.labelled_list.itemChanged.connect(lambda _: self._show_classes())
        layout.addWidget(self.labelled_list)
        layout.addWidget(QLabel("Unlabelled tomograms (co-training):"))
        self.unlabelled_list = QListWidget()
        self.unlabelled_list.setMaximumHeight(90)
        layout.addWidget(self.unlabelled_list)
        self.add_files_button = QPushButton("Add unlabelled files…")
        self.add_files_button.clicked.connect(self._choose_files)
        layout.addWidget(self.add_files_button)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        layout.addWidget(self.classes_label)

        form = QFormLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText("light")
        self.preset_combo.setToolTip("tiny: tests; light: CPU; paper: ResNet-34 (GPU)")
        form.addRow("Network", self.preset_combo)
        self.burnin_spin = self._spin(1, 1_000_000, 2000, "supervised steps on the labels")
        form.addRow("Burn-in steps", self.burnin_spin)
        self.cotrain_spin = self._spin(0, 1_000_000, 0, "EMA teacher-student steps with the "
                                       "unlabelled tomograms (0: supervised only)")
        form.addRow("Co-training steps", self.cotrain_spin)
        self.crop_spin = self._spin(32, 256, 96, "training crop side in voxels (x32)")
        self.crop_spin.setSingleStep(32)
        form.addRow("Crop", self.crop_spin)
        self.batch_spin = self._spin(1, 64, 2, "crops per step")
        form.addRow("Batch size", self.batch_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 0.1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(TrainConfig.lr)
        self.lr_spin.setToolTip("peak learning rate (Adam; warm-up, then cosine decay)")
        form.addRow("Learning rate", self.lr_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)
        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("new folder under ~/semietpicker-models")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._choose_folder)
        folder_row.addWidget(self.folder_edit)
        folder_row.addWidget(browse)
        form.addRow("Model folder", folder_row)
        self.resume_check = QCheckBox("continue training the model in this folder")
        form.addRow(self.resume_check)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.loss_plot = LossPlot()
        layout.addWidget(self.loss_plot)
        self.status = QLabel("Annotate a tomogram, then press Start.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        model_buttons = QHBoxLayout()
        self.save_button = QPushButton("Save model as…")
        self.save_button.clicked.connect(self._choose_save_dir)
        self.load_button = QPushButton("Load model…")
        self.load_button.clicked.connect(self._choose_load_dir)
        model_buttons.addWidget(self.save_button)
        model_buttons.addWidget(self.load_button)
        layout.addLayout(model_buttons)
        layout.addStretch()

    @staticmethod
    def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #ff6b6b;" if error else "")
        self.status.setText(text)

    # -- layer lists -------------------------------------------------------------------------
    def _watch(self, layer: object) -> None:
        """Follow renames of a layer and point additions/deletions of picks layers."""
        layer.events.name.connect(self.refresh)
        if isinstance(layer, Points) and layer_meta(layer).get("role") == PICKS:
            layer.events.data.connect(self._on_picks_edited)

    def _on_layers_changed(self, event: object) -> None:
        if event.type == "inserted":
            self._watch(event.value)
        self.refresh()

    def _on_picks_edited(self, event: object) -> None:
        if str(getattr(event, "action", "")) in ("added", "removed"):
            self.refresh()

    @staticmethod
    def _checked(widget: QListWidget) -> set[str]:
        return {widget.item(i).data(Qt.UserRole) for i in range(widget.count())
                if widget.item(i).checkState() == Qt.Checked}

    def refresh(self, event: object = None) -> None:
        """Rebuild the tomogram lists from the viewer's layers, keeping the user's ticks.

        A tomogram seen for the first time is ticked as labelled if it has picks; a file
        added for the first time is ticked as unlabelled.
        """
        was_labelled = self._checked(self.labelled_list)
        was_unlabelled = self._checked(self.unlabelled_list)
        listed = {self.unlabelled_list.item(i).data(Qt.UserRole)
                  for i in range(self.unlabelled_list.count())}
        self.labelled_list.blockSignals(True)
        self.labelled_list.clear()
        self.unlabelled_list.clear()
        for image in tomogram_images(self.viewer):
            layers = role_layers(self.viewer, tomogram_name(image), PICKS)
            total = sum(len(p.data) for p in layers)
            counts = ", ".join(f"{layer_meta(p)['class']} {len(p.data)}" for p in layers)
            text = f"{image.name}: {total} picks ({counts})" if layers else \
                f"{image.name}: no picks layers"
            new = image.name not in listed
            self._add_item(self.labelled_list, text, image.name,
                           image.name in was_labelled or (new and total > 0))
            self._add_item(self.unlabelled_list, image.name, image.name,
                           image.name in was_unlabelled)
        for path in self._files:
            key = str(path)
            item = self._add_item(self.unlabelled_list, f"file: {path.name}", key,
                                  key in was_unlabelled or key not in listed)
            item.setToolTip(key)
        self.labelled_list.blockSignals(False)
        self._show_classes()

    @staticmethod
    def _add_item(widget: QListWidget, text: str, key: str, ticked: bool) -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setData(Qt.UserRole, key)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if ticked else Qt.Unchecked)
        widget.addItem(item)
        return item

    def set_checked(self, labelled: Iterable[str] = (), unlabelled: Iterable[str] = ()) -> None:
        """Tick exactly these image layer names (or file paths) in the two lists."""
        for widget, names in ((self.labelled_list, set(labelled)),
                              (self.unlabelled_list, set(unlabelled))):
            for i in range(widget.count()):
                item = widget.item(i)
                item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in names
                                   else Qt.Unchecked)

    def add_unlabelled_files(self, paths: Iterable[str | Path]) -> None:
        """Add tomogram files (MRC, zarr) to the unlabelled list, ticked."""
        for path in paths:
            path = Path(path)
            if path not in self._files:
                self._files.append(path)
        self.refresh()

    def _labelled_images(self) -> list[Image]:
        names = self._checked(self.labelled_list)
        return [image for image in tomogram_images(self.viewer) if image.name in names]

    def _picks_layers(self, images: Iterable[Image]) -> list[Points]:
        return [layer for image in images
                for layer in role_layers(self.viewer, tomogram_name(image), PICKS)]

    def _show_classes(self) -> None:
        try:
            classes = classes_of_layers(self._picks_layers(self._labelled_images()))
        except ValueError as err:
            self.classes_label.setText(f"Classes: {err}")
            return
        self.classes_label.setText(
            "Classes: " + (", ".join(f"{c.name} ({c.radius_A:g} Å)" for c in classes)
                           or "none yet (add picks layers with the annotation dock)"))

    # -- starting, progress, stopping ----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _model_folder(self) -> Path:
        text = self.folder_edit.text().strip()
        if text:
            return Path(text).expanduser()
        folder = Path.home() / "semietpicker-models" / time.strftime("model-%Y%m%d-%H%M%S")
        self.folder_edit.setText(str(folder))
        return folder

    def collect_job(self) -> TrainJob:
        """Read the widget and the layers into a :class:`TrainJob`; ValueError says what's wrong."""
        images = self._labelled_images()
        if not images:
            raise ValueError("Tick at least one labelled tomogram (an Image layer with picks).")
        picks_layers = self._picks_layers(images)
        classes = classes_of_layers(picks_layers)
        if not classes:
            raise ValueError(f"{images[0].name} has no picks layers: add points with the "
                             "annotation dock or open a picks file for it first.")
        labelled = []
        for image in images:
            name, origin = tomogram_name(image), layer_origin(image)
            own = [layer_picks(layer, origin, name)
                   for layer in role_layers(self.viewer, name, PICKS)]
            labelled.append((image_tomogram(image), pd.concat(own, ignore_index=True)
                             if own else pd.DataFrame()))
        if sum(len(p) for _, p in labelled) == 0:
            raise ValueError("The labelled tomograms have no picks yet: nothing to learn from.")
        empty = [t.name for t, p in labelled if not len(p)]
        labelled = [(t, p) for t, p in labelled if len(p)]
        chosen = self._checked(self.unlabelled_list) - {i.name for i in images}
        unlabelled: list[Tomogram | Path] = [
            image_tomogram(image) for image in tomogram_images(self.viewer)
            if image.name in chosen]
        unlabelled += [path for path in self._files if str(path) in chosen]
        config = TrainConfig(steps=self.burnin_spin.value(),
                             cotrain_steps=self.cotrain_spin.value(),
                             batch_size=self.batch_spin.value(), crop=self.crop_spin.value(),
                             lr=self.lr_spin.value(),
                             preset=self.preset_combo.currentText(),
                             device=self.device_combo.currentText())
        out_dir = self._model_folder()
        job = TrainJob(config, classes, labelled, unlabelled, out_dir)
        if empty:
            job.notes.append(f"{', '.join(empty)} left out: no picks")
        if config.cotrain_steps and not unlabelled:
            job.notes.append("no unlabelled tomogram ticked: co-training steps are skipped")
        if self.resume_check.isChecked():
            self._prepare_resume(job)
        elif (out_dir / CONFIG).is_file():
            job.notes.append("replacing the model already in this folder")
        return job

    @staticmethod
    def _prepare_resume(job: TrainJob) -> None:
        if not (job.out_dir / TRAINER_STATE).is_file():
            raise ValueError(f"{job.out_dir} holds no training state ({TRAINER_STATE}) to "
                             "continue from: untick 'continue' to train a new model.")
        card = load_card(job.out_dir)
        known = {c.name: c for c in card.classes}
        unknown = sorted({c.name for c in job.classes} - set(known))
        if unknown:
            raise ValueError(f"the model in {job.out_dir} knows the classes "
                             f"{', '.join(known)}, not {', '.join(unknown)}: train a new model.")
        job.classes = list(card.classes)
        job.config.preset = card.model.preset
        done = int(card.history.get("steps_done", 0))
        job.config.steps = done + job.config.steps  # burn-in continues for the steps asked
        job.resume = True
        job.notes.append(f"continuing from step {done}")

    def start(self) -> bool:
        """Start training in a worker thread; False (and a message in the dock) if it can't."""
        if self.running:
            return False
        try:
            job = self.collect_job()
        except (ValueError, FileNotFoundError) as err:
            self._say(str(err), error=True)
            return False
        self._stop.clear()
        self._stop_asked_at = None
        self.result = None
        self.loss_plot.clear()
        total = job.config.steps + (job.config.cotrain_steps if job.unlabelled else 0)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("preparing volumes…")
        self._set_running(True)
        notes = f" ({'; '.join(job.notes)})" if job.notes else ""
        self._say(f"Training {', '.join(c.name for c in job.classes)} on "
                  f"{len(job.labelled)} labelled and {len(job.unlabelled)} unlabelled "
                  f"tomogram(s) into {job.out_dir}{notes}")
        self._job = job
        self.probe.start()
        self._worker = create_worker(
            run_job, job, self._relay.progress.emit, self._stop.is_set,
            _connect={"returned": self._on_returned, "errored": self._on_error,
                      "finished": self._on_finished})
        return True

    def stop(self) -> None:
        """Ask the training loop to stop after the current step; it saves the model."""
        if self.running and not self._stop.is_set():
            self._stop_asked_at = time.perf_counter()
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.progress_bar.setFormat("stopping…")

    def _set_running(self, running: bool) -> None:
        for widget in (self.start_button, self.save_button, self.load_button,
                       self.add_files_button):
            widget.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_progress(self, report: TrainProgress) -> None:
        self.progress_bar.setMaximum(report.total_steps)
        self.progress_bar.setValue(report.step)
        if not self._stop.is_set():
            self.progress_bar.setFormat(
                f"{report.phase} %v/%m · loss {report.loss:.4g} · ETA "
                f"{format_duration(report.eta_s)}")
        self.loss_plot.add(report.loss, report.loss_unlabelled)

    def _on_returned(self, result: TrainResult) -> None:
        self.result = result
        out_dir = self._job.out_dir
        took = ""
        if self._stop_asked_at is not None:
            self.stop_latency_s = time.perf_counter() - self._stop_asked_at
            took = f" {self.stop_latency_s:.2f} s after Stop"
        if not (out_dir / CONFIG).is_file():
            self._say(f"Training ended ({result.reason}) before any model was saved.",
                      error=True)
            return
        self.last_model_dir = out_dir
        if result.reason.startswith("diverged"):
            self._say(f"Training {result.reason}; kept the last checkpoint in {out_dir}.",
                      error=True)
        else:
            final = f", loss {np.mean(result.losses[-10:]):.4g}" if result.losses else ""
            verb = "Stopped" if result.stopped else "Done"
            self._say(f"{verb} at step {result.steps_done}{took}{final}. Model: {out_dir}")
        self.model_ready.emit(str(out_dir))

    def _on_error(self, err: Exception) -> None:
        self._say(f"Training failed: {err}", error=True)

    def _on_finished(self) -> None:
        self.probe.stop()
        self._worker = None
        self._set_running(False)
        self.progress_bar.setFormat("%v/%m steps" if self.result else "idle")
        self.status.setText(f"{self.status.text()}\n{self.probe.summary()}")

    # -- model folders -------------------------------------------------------------------------
    def save_model_as(self, target: str | Path) -> Path:
        """Copy the last model (weights, config, training state) into ``target``."""
        if self.last_model_dir is None:
            raise ValueError("No model yet: train or load one first.")
        target = Path(target).expanduser()
        if target.resolve() == self.last_model_dir.resolve():
            return target
        target.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, CONFIG, TRAINER_STATE):
            if (self.last_model_dir / name).is_file():
                shutil.copy2(self.last_model_dir / name, target / name)
        return target

    def load_model_dir(self, model_dir: str | Path) -> Path:
        """Use a model folder (checked by reading its config) and announce it."""
        model_dir = Path(model_dir).expanduser()
        card = load_card(model_dir)
        if not (model_dir / WEIGHTS).is_file():
            raise FileNotFoundError(f"{model_dir}: missing weights file {WEIGHTS}")
        self.last_model_dir = model_dir
        self.folder_edit.setText(str(model_dir))
        self._say(f"Model {model_dir.name}: {', '.join(c.name for c in card.classes)} at "
                  f"{card.voxel_size:g} Å/voxel, {card.history.get('steps_done', '?')} steps.")
        self.model_ready.emit(str(model_dir))
        return model_dir

    def fine_tune(self, model_dir: str | Path, tomogram: str) -> bool:
        """Continue training a copy of ``model_dir`` with ``tomogram`` ticked as labelled.

        Returns whether training started (if not, the dock says why).
        """
        source = Path(model_dir)
        target = next(source.with_name(f"{source.name}-ft{i}") for i in range(1, 10_000)
                      if not source.with_name(f"{source.name}-ft{i}").exists())
        self.last_model_dir = source
        self.save_model_as(target)
        self.folder_edit.setText(str(target))
        self.resume_check.setChecked((target / TRAINER_STATE).is_file())
        self.refresh()
        self.set_checked(self._checked(self.labelled_list) | {tomogram},
                         self._checked(self.unlabelled_list) - {tomogram})
        return self.start()

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.folder_edit.setText(path)

    def _choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Unlabelled tomograms", "", "Tomograms (*.mrc *.rec *.map *.zarr);;All (*)")
        if paths:
            self.add_unlabelled_files(paths)

    def _choose_save_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Save model into folder")
        if not path:
            return
        try:
            self._say(f"Model saved to {self.save_model_as(path)}")
        except (ValueError, OSError) as err:
            self._say(str(err), error=True)

    def _choose_load_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Load model folder")
        if not path:
            return
        try:
            self.load_model_dir(path)
        except (ValueError, OSError) as err:
            self._say(str(err), error=True)

    def closeEvent(self, event: object) -> None:  # noqa: N802 (Qt API)
        """Closing the dock stops a running training (it still saves its model)."""
        self._stop.set()
        super().closeEvent(event)

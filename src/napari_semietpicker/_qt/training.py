"""Training dock: labelled and unlabelled tomograms from the viewer, a worker thread, a loss plot.

The widget only gathers inputs and shows progress;
:class:`~napari_semietpicker.training.loop.Trainer` does the work in a napari worker thread.
Progress crosses threads through a Qt signal, the Stop button sets a flag the training loop
checks every step, and a timer measures how late the event loop runs while training (the
viewer must stay responsive).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtGui import QShowEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..compute import available_devices, has_accelerator
from ..layers import PICKS
from ..model.checkpoint import CONFIG, WEIGHTS, load_card, model_exists
from ..model.network import NETWORK_PRESETS
from ..training.config import CPU_CROP, TrainConfig, TrainProgress, TrainResult
from ..training.timing import measure_step_seconds, training_seconds
from ._layer_tools import (
    classes_of_layers,
    image_tomogram,
    layer_origin,
    layer_picks,
    role_layers,
    tomogram_name,
)
from ._widgets import (
    LatenessProbe,
    Relay,
    StatusLabel,
    folder_row,
    format_duration,
    scrolled_layout,
)
from .lifecycle import BackgroundJob, DockLifecycle
from .plots import LossPlot
from .train_job import (
    TrainJob,
    copy_model,
    fine_tune_folder,
    prepare_fine_tune,
    prepare_resume,
    run_job,
)
from .training_sets import TrainingSets, checked_keys

TRAINING = "training"  # the kind of the dock's background jobs
#: Burn-in steps on a machine without a GPU: a model that trains in minutes.
CPU_BURN_IN = 200
#: Binning choices of the dock (powers of 2, pyramid levels 0, 1, 2): 1x is the
#: tomograms' own voxel size.
BIN_FACTORS = (1, 2, 4)


class TrainingWidget(QWidget):
    """Train a picker on the viewer's annotated tomograms; Stop keeps the last good model.

    ``model_ready`` is emitted with the model folder whenever a model is trained or loaded,
    so the prediction dock can use it; ``last_model_dir`` holds the latest one.
    ``progressed`` is emitted with each step's TrainProgress, on the GUI thread.
    """

    model_ready = Signal(str)
    progressed = Signal(object)
    _checked = staticmethod(checked_keys)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.last_model_dir: Path | None = None
        self.result: TrainResult | None = None
        self._worker: BackgroundJob | None = None
        self._stop_asked_at: float | None = None
        self.stop_latency_s: float | None = None
        self._job: TrainJob | None = None
        self._relay = Relay(self)
        self._relay.progress.connect(self._on_progress)
        self.probe = LatenessProbe(parent=self)
        self.lifecycle = DockLifecycle(self, self._on_dock_closed)
        self._build()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        layout = scrolled_layout(self)
        self.sets = TrainingSets(self.viewer, self.lifecycle.connect)
        self.labelled_list = self.sets.labelled_list
        self.unlabelled_list = self.sets.unlabelled_list
        self.add_files_button = self.sets.add_files_button
        self.classes_label = self.sets.classes_label
        layout.addWidget(self.sets)

        form = QFormLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(NETWORK_PRESETS))
        self.preset_combo.setCurrentText("light")
        self.preset_combo.setToolTip(
            "tiny: tests; light: CPU; medium: long CPU runs; paper: ResNet-34 (GPU)")
        form.addRow("Network", self.preset_combo)
        self.burnin_spin = self._spin(1, 1_000_000, TrainConfig.steps,
                                      "supervised steps on the labels, counted from the "
                                      "model's first step (continuing trains up to the "
                                      "totals)")
        form.addRow("Burn-in steps", self.burnin_spin)
        self.cotrain_spin = self._spin(0, 1_000_000, 0, "EMA teacher-student steps with the "
                                       "unlabelled tomograms after the burn-in (0: "
                                       "supervised only); a total, also when continuing")
        form.addRow("Co-training steps", self.cotrain_spin)
        self.bin_combo = QComboBox()
        self.bin_combo.addItems([f"{f}x" for f in BIN_FACTORS])
        self.bin_combo.setToolTip("train on mean-binned tomograms: a coarser, faster model "
                                  "(8x fewer voxels at 2x); it picks any tomogram, resampled")
        form.addRow("Bin", self.bin_combo)
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
        self.device_combo.addItems(available_devices())  # only devices this machine has
        form.addRow("Device", self.device_combo)
        folder, self.folder_edit = folder_row("new folder under ~/semietpicker-models",
                                              "Model folder")
        form.addRow("Model folder", folder)
        self.resume_check = QCheckBox("continue training the model in this folder (up to "
                                      "the step totals above)")
        form.addRow(self.resume_check)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(lambda: self.start())  # type: ignore[arg-type]  # its bool is unused
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        self.eta_label = StatusLabel("")
        self.eta_label.setToolTip("a step timed on this machine with these settings")
        layout.addWidget(self.eta_label)
        if not has_accelerator():
            self._use_cpu_defaults()
        self._estimates: dict[tuple, float] = {}
        self._estimate_job: BackgroundJob | None = None
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(500)
        self._estimate_timer.timeout.connect(self.estimate_eta)  # type: ignore[arg-type]  # its bool is unused
        for combo in (self.preset_combo, self.device_combo):
            combo.currentTextChanged.connect(lambda _: self._estimate_soon())
        for spin in (self.crop_spin, self.batch_spin):
            spin.valueChanged.connect(lambda _: self._estimate_soon())
        for spin in (self.burnin_spin, self.cotrain_spin):
            spin.valueChanged.connect(lambda _: self._show_eta())
        self.unlabelled_list.itemChanged.connect(lambda _: self._follow_unlabelled_ticks())
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("idle")
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.loss_plot = LossPlot()
        layout.addWidget(self.loss_plot)
        self.status = StatusLabel("Annotate a tomogram, then press Start.")
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

    def _use_cpu_defaults(self) -> None:
        """No GPU: the fast setting (2x binning, light network, 64-voxel crops, a few hundred
        steps); the ETA below Start says how long it takes here."""
        self.bin_combo.setCurrentText("2x")
        self.preset_combo.setCurrentText("light")
        self.crop_spin.setValue(CPU_CROP)
        self.burnin_spin.setValue(CPU_BURN_IN)
        self.device_combo.setCurrentText("cpu")

    def _follow_unlabelled_ticks(self) -> None:
        """Ticking unlabelled tomograms turns co-training on (untick all: off again)."""
        ticked = bool(self._checked(self.unlabelled_list))
        if ticked and self.cotrain_spin.value() == 0:
            self.cotrain_spin.setValue(max(1, self.burnin_spin.value() // 2))
        elif not ticked and self.cotrain_spin.value():
            self.cotrain_spin.setValue(0)

    def showEvent(self, event: QShowEvent | None) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._estimate_soon()

    def _estimate_key(self) -> tuple:
        """The settings a step's time depends on (the class count barely: the six CZII)."""
        return (self.preset_combo.currentText(), self.crop_spin.value(),
                self.batch_spin.value(), 6, self.device_combo.currentText())

    def _estimate_soon(self) -> None:
        if not self.lifecycle.closed:
            self._estimate_timer.start()

    def estimate_eta(self) -> bool:
        """Time one training step with the dock's settings in a worker (for the ETA shown
        before Start); False when not needed now (known already, busy, or training)."""
        key = self._estimate_key()
        if key in self._estimates:
            self._show_eta()
            return False
        if self.running or self._estimate_job is not None:
            return False
        self.eta_label.say("Timing a training step with these settings…")

        def done(seconds: float) -> None:
            self._estimates[key] = seconds
            self._show_eta()

        self._estimate_job = BackgroundJob(
            "estimate", measure_step_seconds, *key, on_returned=done,
            on_error=lambda err: self.eta_label.say(f"No ETA: {err}"),
            on_finished=self._on_estimated)
        return True

    def _on_estimated(self) -> None:
        self._estimate_job = None
        if self._estimate_key() not in self._estimates:
            self._estimate_soon()  # the settings changed meanwhile

    def _show_eta(self) -> None:
        seconds = self._estimates.get(self._estimate_key())
        if seconds is None or self.running:
            return
        steps = self.burnin_spin.value() + self.cotrain_spin.value()
        total = training_seconds(seconds, self.burnin_spin.value(), self.cotrain_spin.value())
        self.eta_label.say(f"ETA about {format_duration(total)} for {steps} steps here "
                           f"({seconds:.2f} s per step, {self.device_combo.currentText()})")

    @staticmethod
    def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    def _say(self, text: str, error: bool = False) -> None:
        self.status.say(text, error)

    # -- the tomogram lists (see TrainingSets) ---------------------------------------------------
    def refresh(self, event: object = None) -> None:
        """Rebuild the tomogram lists from the viewer's layers, keeping the user's ticks."""
        self.sets.refresh()

    def set_checked(self, labelled: Iterable[str] = (), unlabelled: Iterable[str] = ()) -> None:
        """Tick exactly these image layer names (or file paths) in the two lists."""
        self.sets.set_checked(labelled, unlabelled)

    def add_unlabelled_files(self, paths: Iterable[str | Path]) -> None:
        """Add tomogram files (MRC, zarr) to the unlabelled list, ticked."""
        self.sets.add_unlabelled_files(paths)

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

    def collect_job(self, init_from: Path | None = None) -> TrainJob:
        """Read the widget and the layers into a :class:`TrainJob`; ValueError says what's wrong.

        ``init_from``: fine-tune the model in that folder (its weights, a fresh schedule).
        """
        images = self.sets.labelled_images()
        if not images:
            raise ValueError("Tick at least one labelled tomogram (an Image layer with picks).")
        classes = classes_of_layers(self.sets.picks_layers(images))
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
        unlabelled = self.sets.unlabelled(exclude={i.name for i in images})
        config = TrainConfig(steps=self.burnin_spin.value(),
                             cotrain_steps=self.cotrain_spin.value(),
                             batch_size=self.batch_spin.value(), crop=self.crop_spin.value(),
                             lr=self.lr_spin.value(),
                             preset=self.preset_combo.currentText(),
                             device=self.device_combo.currentText())
        out_dir = self._model_folder()
        job = TrainJob(config, classes, labelled, unlabelled, out_dir,
                       level=BIN_FACTORS[self.bin_combo.currentIndex()].bit_length() - 1)
        if empty:
            job.notes.append(f"{', '.join(empty)} left out: no picks")
        if config.cotrain_steps and not unlabelled:
            job.notes.append("no unlabelled tomogram ticked: co-training steps are skipped")
        if init_from is not None:
            prepare_fine_tune(job, Path(init_from))
        elif self.resume_check.isChecked():
            prepare_resume(job)
        if not job.resume and model_exists(out_dir):
            job.notes.append("replacing the model already in this folder")
        return job

    def start(self, init_from: Path | None = None) -> bool:
        """Start training in a worker thread; False (and a message in the dock) if it can't.

        ``init_from``: fine-tune the model in that folder into the dock's model folder.
        """
        if self.running:
            return False
        if BackgroundJob.running(TRAINING):
            self._say("A training started from a closed Training dock is still saving its "
                      "model; press Start again in a moment.", error=True)
            return False
        try:
            job = self.collect_job(init_from)
        except (ValueError, FileNotFoundError) as err:
            self._say(str(err), error=True)
            return False
        if not job.resume and model_exists(job.out_dir) and not self._confirm_replace(job):
            self._say(f"Kept the model in {job.out_dir}: choose another folder, or tick "
                      "'continue training'.")
            return False
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
        self._worker = BackgroundJob(TRAINING, run_job, job, self._relay.progress.emit,
                                     on_returned=self._on_returned, on_error=self._on_error,
                                     on_finished=self._on_finished)
        return True

    def _confirm_replace(self, job: TrainJob) -> bool:
        """Ask before a new training replaces the model already in the job's folder."""
        answer = QMessageBox.question(
            self, "Replace model?",
            f"{job.out_dir} already holds a trained model. Replace it with a new one?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def stop(self) -> None:
        """Ask the training loop to stop after the current step; it saves the model."""
        if self._worker is not None and not self._worker.stop_flag.is_set():
            self._stop_asked_at = time.perf_counter()
            self._worker.stop()
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
        if self._worker is not None and not self._worker.stop_flag.is_set():
            self.progress_bar.setFormat(
                f"{report.phase} %v/%m · loss {report.loss:.4g} · ETA "
                f"{format_duration(report.eta_s)}")
        self.loss_plot.add(report.loss, report.loss_unlabelled)
        self.progressed.emit(report)

    def _on_returned(self, result: TrainResult) -> None:
        self.result = result
        assert self._job is not None  # a job returned
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
        return copy_model(self.last_model_dir, Path(target).expanduser())

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
        """Fine-tune ``model_dir`` (its weights, a fresh optimiser and schedule) into a new
        ``<model>-ft<i>`` folder beside it, with ``tomogram`` ticked as labelled.

        Returns whether training started (if not, the dock says why).
        """
        source = Path(model_dir)
        self.folder_edit.setText(str(fine_tune_folder(source)))
        self.resume_check.setChecked(False)
        self.refresh()
        self.set_checked(self._checked(self.labelled_list) | {tomogram},
                         self._checked(self.unlabelled_list) - {tomogram})
        return self.start(init_from=source)

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

    def _on_dock_closed(self) -> None:
        """The dock or its window closes: stop a running training and wait until it has
        saved its model, so that nothing reports into widgets that are going away."""
        self.probe.stop()
        self._estimate_timer.stop()
        if self._estimate_job is not None:
            self._estimate_job.stop_and_wait()
            self._estimate_job = None
        if self._worker is not None:
            self._worker.stop_and_wait()
            self._worker = None

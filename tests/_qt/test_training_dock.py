"""The training dock in a real napari viewer: a tiny run, Stop, bad input, model folders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from napari.layers import Layer
from qtpy.QtWidgets import QFileDialog

from napari_semietpicker._qt._layer_tools import classes_of_layers
from napari_semietpicker._qt._widgets import LatenessProbe
from napari_semietpicker._qt.training import TrainingWidget
from napari_semietpicker._qt.training_sets import checked_keys
from napari_semietpicker.classes import CLASS_PRESETS
from napari_semietpicker.io.picks import empty_picks
from napari_semietpicker.layers import META, PICKS, image_layer, picks_layers, points_layer
from napari_semietpicker.model.checkpoint import CONFIG, load_card, load_model
from napari_semietpicker.training.config import TrainConfig


def make_dock(viewer, folder, burn_in: int, cotrain: int = 0) -> TrainingWidget:
    """A training dock set up for a tiny, quick run on the two annotated blob tomograms."""
    dock = TrainingWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Training")
    dock.preset_combo.setCurrentText("tiny")
    dock.burnin_spin.setValue(burn_in)
    dock.cotrain_spin.setValue(cotrain)
    dock.crop_spin.setValue(32)
    dock.bin_combo.setCurrentText("1x")
    dock.device_combo.setCurrentText("cpu")
    dock.folder_edit.setText(str(folder))
    dock.set_checked(["blob_0", "blob_1"], ["blob_2"] if cotrain else [])
    return dock


def test_lists_labelled_tomograms_and_their_classes(blob_viewer):
    dock = TrainingWidget(blob_viewer)
    texts = [dock.labelled_list.item(i).text() for i in range(dock.labelled_list.count())]
    assert texts[0] == "blob_0: 10 picks (big 5, small 5)"
    assert texts[2] == "blob_2: no picks layers"
    assert checked_keys(dock.labelled_list) == {"blob_0", "blob_1"}
    assert dock.classes_label.text() == "Classes: big (60 Å), small (40 Å)"
    # Clicking a point into a picks layer updates the counts.
    layer = next(la for la in blob_viewer.layers
                 if la.metadata.get(META, {}).get("role") == PICKS)
    layer.add([[30.0, 40.0, 40.0]])
    assert dock.labelled_list.item(0).text().startswith("blob_0: 11 picks")


def test_class_weights_come_from_the_layer_metadata(blob_viewer):
    layers = [la for la in blob_viewer.layers if la.metadata.get(META, {}).get("role") == PICKS]
    assert [c.weight for c in classes_of_layers(layers)] == [1.0, 1.0]
    # A picks layer of a CZII class carries the class's weight (beta-amylase: 0).
    amylase = next(c for c in CLASS_PRESETS["czii"] if c.name == "beta-amylase")
    assert amylase.weight == 0.0
    czii_layer = Layer.create(*points_layer(empty_picks(), amylase, "blob_0"))
    assert classes_of_layers([czii_layer])[0] == amylase
    # The metadata decides, not the class name; a layer without a weight scores with 1.
    layers[0].metadata[META]["class"] = "beta-amylase"
    del layers[0].metadata[META]["weight"]
    layers[1].metadata[META]["weight"] = 2.0
    assert [(c.name, c.weight) for c in classes_of_layers(layers)[:2]] == [
        ("beta-amylase", 1.0), ("small", 2.0)]


def test_tiny_run_with_cotraining_writes_and_announces_a_model(blob_viewer, qtbot, tmp_path):
    dock = make_dock(blob_viewer, tmp_path / "model", burn_in=3, cotrain=2)
    announced = []
    dock.model_ready.connect(announced.append)
    dock.start()
    assert dock.running and not dock.start_button.isEnabled()
    qtbot.waitUntil(lambda: not dock.running, timeout=90_000)

    assert dock.result.steps_done == 5 and not dock.result.stopped
    assert dock.progress_bar.value() == dock.progress_bar.maximum() == 5
    assert len(dock.loss_plot.losses) == 5 and len(dock.loss_plot.unlabelled) == 2
    assert announced == [str(tmp_path / "model")] and dock.last_model_dir == tmp_path / "model"
    card = load_card(tmp_path / "model")
    assert [c.name for c in card.classes] == ["big", "small"]
    assert card.history["unlabelled"] == ["blob_2"]
    # The event-loop probe ran during training and its summary is shown (how many samples
    # depends on the machine's speed, so only the summary's presence is checked here).
    assert dock.probe.summary() in dock.status.text()

    # Continue training the same folder up to 7 steps (totals): co-training goes on at step 5.
    dock.cotrain_spin.setValue(4)
    dock.resume_check.setChecked(True)
    dock.start()
    qtbot.waitUntil(lambda: not dock.running, timeout=60_000)
    assert dock.result.steps_done == 7
    assert load_card(tmp_path / "model").history["steps_done"] == 7

    # Save as copies the folder; the copy loads and is announced.
    copy = dock.save_model_as(tmp_path / "copy")
    assert (copy / CONFIG).is_file()
    load_model(copy)
    dock.load_model_dir(copy)
    assert announced[-1] == str(copy)


def test_stop_returns_quickly_and_keeps_a_loadable_model(blob_viewer, qtbot, tmp_path):
    dock = make_dock(blob_viewer, tmp_path / "model", burn_in=10_000)
    steps = []
    dock.progressed.connect(lambda report: steps.append(time.perf_counter()))
    dock.start()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=60_000)
    asked = time.perf_counter()
    dock.stop_button.click()
    qtbot.waitUntil(lambda: not dock.running, timeout=30_000)
    waited = time.perf_counter() - asked
    step = max(b - a for a, b in zip(steps, steps[1:]))
    print(f"Stop returned after {waited:.2f} s; slowest step {step:.2f} s")
    # The loop checks the flag before each step, then writes the model: at most the rest
    # of one step and a checkpoint (about 0.3 s on an idle 2-core CPU).
    assert waited < step + 5.0  # generous for a loaded CI machine; without Stop it runs on
    assert dock.result.stopped and dock.result.steps_done < 10_000
    _, card = load_model(tmp_path / "model")
    assert card.history["steps_done"] == dock.result.steps_done
    assert "Stopped at step" in dock.status.text()


def test_binned_training_and_continuing_at_the_models_binning(blob_viewer, qtbot, tmp_path):
    dock = make_dock(blob_viewer, tmp_path / "model", burn_in=2)
    dock.bin_combo.setCurrentText("2x")
    dock.lr_spin.setValue(5e-4)
    dock.start()
    qtbot.waitUntil(lambda: not dock.running, timeout=90_000)
    card = load_card(tmp_path / "model")
    assert card.voxel_size == 20.0 and card.history["steps_done"] == 2  # 10 A layers, binned
    # Continuing with the dock back at 1x trains on with the model's binning, and says so.
    dock.bin_combo.setCurrentText("1x")
    dock.burnin_spin.setValue(3)
    dock.lr_spin.setValue(TrainConfig.lr)  # back at the default: the model keeps its own rate
    dock.resume_check.setChecked(True)
    dock.start()
    assert "binning 2x, as the model was trained" in dock.status.text()
    qtbot.waitUntil(lambda: not dock.running, timeout=90_000)
    card = load_card(tmp_path / "model")
    assert card.voxel_size == 20.0 and card.history["steps_done"] == 3
    assert card.history["train_config"]["lr"] == 5e-4


def test_bad_input_is_explained_in_the_dock(blob_viewer, monkeypatch, tmp_path):
    dock = TrainingWidget(blob_viewer)
    dock.set_checked([], [])
    dock.start_button.click()
    assert not dock.running and "Tick at least one labelled tomogram" in dock.status.text()

    dock.set_checked(["blob_2"])
    dock.start_button.click()
    assert not dock.running and "blob_2 has no picks layers" in dock.status.text()

    # Two radii for one class name cannot be trained.
    layer = next(la for la in blob_viewer.layers
                 if la.metadata.get(META, {}).get("tomogram") == "blob_1"
                 and la.metadata[META].get("class") == "big")
    layer.metadata[META]["radius_A"] = 99.0
    dock.set_checked(["blob_0", "blob_1"])
    dock.start_button.click()
    assert not dock.running and "class 'big' has two radii" in dock.status.text()

    # Continuing needs a training state in the folder.
    layer.metadata[META]["radius_A"] = 60.0
    dock.folder_edit.setText(str(tmp_path))
    dock.resume_check.setChecked(True)
    dock.start_button.click()
    assert not dock.running and "holds no training state" in dock.status.text()

    # Loading a folder that is not a model says so.
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path))
    dock.load_button.click()
    assert "not a model directory" in dock.status.text()
    dock.save_button.click()
    assert "No model yet" in dock.status.text()


def test_lateness_probe_records_a_blocked_event_loop(qtbot):
    probe = LatenessProbe(interval_ms=20)
    assert probe.summary() == "UI delay: not measured"
    probe.start()
    qtbot.wait(100)
    time.sleep(0.3)  # the event loop is blocked: the next tick fires at least ~280 ms late
    qtbot.wait(100)
    probe.stop()
    assert max(probe.lateness_ms) >= 250
    assert f"({len(probe.lateness_ms)} samples)" in probe.summary()


def test_closing_napari_while_training_stops_and_keeps_the_model(tmp_path):
    """Closing the window mid-run used to segfault (exit 139) and save no model."""
    script = Path(__file__).parents[1] / "scripts" / "close_napari_while_training.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "model"),
                           str(Path(__file__).parents[1])], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(Path(__file__).parents[2] / "src"),
                               os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exited cleanly; model saved: True" in done.stdout
    _, card = load_model(tmp_path / "model")
    assert 3 <= card.history["steps_done"] < 100_000


def test_closing_the_viewer_mid_run_waits_for_the_model(blob_viewer, qtbot, tmp_path):
    dock = make_dock(blob_viewer, tmp_path / "model", burn_in=100_000)
    steps = []
    dock.progressed.connect(steps.append)
    dock.start()
    job = dock._worker
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60_000)
    blob_viewer.close()
    assert job.done.is_set()  # the worker has returned before close() does
    _, card = load_model(tmp_path / "model")
    assert 2 <= card.history["steps_done"] < 100_000


def viewer_connections(viewer) -> dict:
    """How many callbacks each viewer-list and layer event holds."""
    counts = {name: len(getattr(viewer.layers.events, name).callbacks)
              for name in ("inserted", "removing", "removed")}
    for i, layer in enumerate(viewer.layers):
        for name in ("data", "name"):
            counts[f"{i} {name}"] = len(getattr(layer.events, name).callbacks)
    return counts


def test_removed_docks_disconnect_and_stop_their_run(blob_viewer, qtbot, tmp_path):
    before = viewer_connections(blob_viewer)
    window = blob_viewer.window
    docks = [window.add_plugin_dock_widget("napari-semietpicker", name)[1]
             for name in ("Classes and annotation", "Training", "Prediction, QC and export")]
    training = docks[1]
    assert viewer_connections(blob_viewer) != before
    training.preset_combo.setCurrentText("tiny")
    training.burnin_spin.setValue(100_000)
    training.crop_spin.setValue(32)
    training.device_combo.setCurrentText("cpu")
    training.folder_edit.setText(str(tmp_path / "model"))
    steps = []
    training.progressed.connect(steps.append)
    assert training.start()
    job = training._worker
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60_000)
    for dock in docks:  # what each dock's x button does
        window.remove_dock_widget(dock)
    assert job.done.is_set() and (tmp_path / "model" / CONFIG).is_file()
    assert viewer_connections(blob_viewer) == before
    # A reopened Training dock is a new widget; it can train (no orphan run beside it).
    _, again = window.add_plugin_dock_widget("napari-semietpicker", "Training")
    assert again is not training and not again.running


def test_a_run_left_by_a_closed_dock_blocks_a_second_one(blob_viewer, tmp_path):
    from napari_semietpicker._qt.lifecycle import BackgroundJob

    orphan = threading.Event()
    job = BackgroundJob("training", lambda should_stop: orphan.wait(30),
                        on_returned=lambda _: None,
                        on_error=lambda _: None, on_finished=lambda: None)
    try:
        dock = make_dock(blob_viewer, tmp_path / "model", burn_in=2)
        assert not dock.start() and "still saving its model" in dock.status.text()
    finally:
        orphan.set()
        job.done.wait(30)


def test_a_tomogram_gaining_picks_is_ticked_as_labelled(make_napari_viewer, blob_set):
    """The natural order: open a tomogram, open the Training dock, make layers, click."""
    viewer = make_napari_viewer()
    tomogram = blob_set["tomograms"][0]
    viewer.add_layer(Layer.create(*image_layer(tomogram)))
    dock = TrainingWidget(viewer)
    assert checked_keys(dock.labelled_list) == set()
    [layer] = [viewer.add_layer(Layer.create(*item)) for item in
               picks_layers(empty_picks(), blob_set["classes"][:1], tomogram.name)]
    assert checked_keys(dock.labelled_list) == set()  # no picks yet
    layer.add([[30.0, 40.0, 40.0]])
    assert checked_keys(dock.labelled_list) == {"blob_0"}
    dock.set_checked([])  # the user's untick stays while picks are added
    layer.add([[20.0, 40.0, 40.0]])
    assert checked_keys(dock.labelled_list) == set()


def test_cpu_defaults_eta_and_cotraining_follow_the_machine_and_the_ticks(blob_viewer, qtbot,
                                                                          monkeypatch):
    from napari_semietpicker import compute

    dock = TrainingWidget(blob_viewer)
    devices = [dock.device_combo.itemText(i) for i in range(dock.device_combo.count())]
    assert devices == compute.available_devices()  # no "cuda" on a machine without one
    if not compute.has_accelerator():
        assert dock.bin_combo.currentText() == "2x" and dock.preset_combo.currentText() == "light"
        assert dock.crop_spin.value() == 64 and dock.burnin_spin.value() == 200
    # Ticking an unlabelled tomogram turns co-training on; unticking all turns it off.
    assert dock.cotrain_spin.value() == 0
    dock.set_checked(["blob_0"], ["blob_2"])
    assert dock.cotrain_spin.value() == dock.burnin_spin.value() // 2
    dock.set_checked(["blob_0"], [])
    assert dock.cotrain_spin.value() == 0
    # The ETA before Start comes from a step timed here (tiny settings to keep it short).
    dock.preset_combo.setCurrentText("tiny")
    dock.crop_spin.setValue(32)
    dock.device_combo.setCurrentText("cpu")
    dock.burnin_spin.setValue(100)
    assert dock.estimate_eta()
    qtbot.waitUntil(lambda: dock.eta_label.text().startswith("ETA"), timeout=60_000)
    timed = re.search(r"for 100 steps here \(([\d.]+) s per step", dock.eta_label.text())
    assert timed is not None and float(timed.group(1)) > 0, dock.eta_label.text()
    dock.burnin_spin.setValue(200)  # new step counts: new ETA, no new timing
    assert "for 200 steps" in dock.eta_label.text() and not dock.estimate_eta()

"""The docks and the CLI take one path through the core (pipeline): the same inputs and seed
give the same model and the same picks, and continuing a model keeps its EMA teacher."""

from __future__ import annotations

import copy

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch
from napari.layers import Image, Layer

from napari_semietpicker._qt.prediction import HEATMAP, PredictionWidget
from napari_semietpicker._qt.train_job import TrainJob, prepare_resume, run_job
from napari_semietpicker._qt.training import TrainingWidget
from napari_semietpicker.cli import main
from napari_semietpicker.io.formats import read_picks, write_picks
from napari_semietpicker.io.tomogram import write_tomogram
from napari_semietpicker.layers import META, PICKS, image_layer, picks_layers
from napari_semietpicker.model.checkpoint import load_model
from napari_semietpicker.training.config import TrainConfig

SHAPE = (64, 64, 64)
STEPS, COTRAIN = 3, 2
LEARN_STEPS, LEARN_RATE = 30, 5e-3  # enough for the model to find some peaks


@pytest.fixture
def pair(blobs):
    """A labelled and an unlabelled 64^3 blob tomogram; picks on whole voxels, so that
    Angstrom -> layer -> Angstrom and Angstrom -> CSV -> Angstrom are both exact."""
    classes, make = blobs
    labelled, picks = make("one_a", seed=11, shape=SHAPE)
    unlabelled, _ = make("one_b", seed=12, shape=SHAPE)
    picks[["x", "y", "z"]] = (picks[["x", "y", "z"]] / 10.0).round() * 10.0
    return classes, labelled, picks, unlabelled


def _state(model_dir):
    return load_model(model_dir)[0].state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


def test_dock_and_cli_give_the_same_model_and_picks(make_napari_viewer, qtbot, pair, tmp_path):
    classes, labelled, picks, unlabelled = pair
    # The dock's path: layers in a viewer, the Training dock's Start, the Prediction dock.
    viewer = make_napari_viewer()
    for item in [image_layer(labelled), *picks_layers(picks, classes, labelled.name, PICKS),
                 image_layer(unlabelled)]:
        viewer.add_layer(Layer.create(*item))
    training = TrainingWidget(viewer)
    training.preset_combo.setCurrentText("tiny")
    training.burnin_spin.setValue(LEARN_STEPS)
    training.cotrain_spin.setValue(COTRAIN)
    training.lr_spin.setValue(LEARN_RATE)
    training.crop_spin.setValue(32)
    training.bin_combo.setCurrentText("1x")
    training.device_combo.setCurrentText("cpu")
    training.folder_edit.setText(str(tmp_path / "dock"))
    training.set_checked([labelled.name], [unlabelled.name])
    assert training.start(), training.status.text()
    qtbot.waitUntil(lambda: not training.running, timeout=120_000)
    assert training.result.steps_done == LEARN_STEPS + COTRAIN, training.status.text()

    # The CLI's path: the same tomograms and picks as files.
    files = tmp_path / "files"
    files.mkdir()
    for tomogram in (labelled, unlabelled):
        write_tomogram(files / f"{tomogram.name}.mrc", tomogram.data, tomogram.voxel_size)
    write_picks(picks, files / "picks.csv")
    assert main(["-q", "train", "--tomograms", str(files / "one_a.mrc"),
                 "--picks", str(files / "picks.csv"), "--unlabeled", str(files / "one_b.mrc"),
                 "--classes", str(_classes_file(classes, tmp_path)), "--out",
                 str(tmp_path / "cli"), "--preset", "tiny", "--crop", "32", "--steps",
                 str(LEARN_STEPS), "--cotrain-steps", str(COTRAIN), "--lr", str(LEARN_RATE),
                 "--device", "cpu"]) == 0
    _assert_same_weights(_state(tmp_path / "dock"), _state(tmp_path / "cli"))

    # Picking the unlabelled tomogram with the dock's model, from the dock and the CLI.
    dock = PredictionWidget(viewer)
    dock.model_edit.setText(str(tmp_path / "dock"))
    dock.image_combo.setCurrentText(unlabelled.name)
    dock.device_combo.setCurrentText("cpu")
    dock.predict_button.click()
    qtbot.waitUntil(lambda: not dock.running, timeout=60_000)
    assert dock.current is not None, dock.status.text()
    out = tmp_path / "cli_picks.csv"
    assert main(["-q", "predict", str(tmp_path / "dock"), str(files / "one_b.mrc"), "--out",
                 str(out), "--heatmaps", str(tmp_path / "heat"), "--device", "cpu",
                 "--threshold", "0"]) == 0  # every candidate peak
    for cls in classes:
        layer = next(la for la in viewer.layers if isinstance(la, Image)
                     and la.metadata.get(META, {}).get("role") == HEATMAP
                     and la.metadata[META]["class"] == cls.name)
        with mrcfile.open(tmp_path / "heat" / f"one_b_{cls.name}.mrc") as mrc:
            np.testing.assert_array_equal(np.asarray(layer.data), mrc.data)
    from_dock = dock.current.cache.at(0.0)
    from_cli = read_picks(out)
    assert len(from_cli) > 0
    pd.testing.assert_frame_equal(from_dock[from_cli.columns].round(3), from_cli,
                                  check_dtype=False)


def _classes_file(classes, folder):
    from napari_semietpicker.classes import save_classes

    path = folder / "classes.json"
    save_classes(classes, path)
    return path


def _job(pair, out_dir) -> TrainJob:
    classes, labelled, picks, unlabelled = pair
    config = TrainConfig(steps=STEPS, cotrain_steps=COTRAIN + 1, preset="tiny", crop=32,
                         device="cpu", ema_alpha=0.2, auto_thresholds=False)
    return TrainJob(config, list(classes), [(labelled, picks)], [unlabelled], out_dir)


def test_continuing_in_the_dock_keeps_the_ema_teacher(pair, tmp_path):
    """Stopped during co-training and continued with the same settings, the dock's job
    ends with the model of an uninterrupted run: the teacher is the saved one, not a new
    copy of the student (as when the dock counted the steps on top of those done)."""
    straight = _job(pair, tmp_path / "straight")
    assert run_job(straight, lambda p: None, lambda: False).steps_done == STEPS + COTRAIN + 1
    first = _job(pair, tmp_path / "resumed")
    reports = []
    result = run_job(first, reports.append, lambda: len(reports) >= STEPS + 1)
    assert result.stopped and result.steps_done == STEPS + 1  # one co-training step done
    teacher = copy.deepcopy(_state(tmp_path / "resumed"))
    again = _job(pair, tmp_path / "resumed")
    prepare_resume(again)
    seen = []
    result = run_job(again, seen.append, lambda: False)
    assert result.steps_done == STEPS + COTRAIN + 1
    assert [p.phase for p in seen] == ["co-training"] * COTRAIN
    assert any(not torch.equal(v, _state(tmp_path / "resumed")[k]) for k, v in teacher.items())
    _assert_same_weights(_state(tmp_path / "resumed"), _state(tmp_path / "straight"))


def test_continuing_with_the_steps_already_done_says_so(pair, tmp_path):
    job = _job(pair, tmp_path / "m")
    job.config.cotrain_steps = 0
    run_job(job, lambda p: None, lambda: False)
    again = _job(pair, tmp_path / "m")
    again.config.cotrain_steps = 0
    prepare_resume(again)
    with pytest.raises(ValueError, match=f"has trained {STEPS} steps, as many as asked"):
        run_job(again, lambda p: None, lambda: False)


def test_continuing_in_the_dock_keeps_the_models_loss_settings(pair, tmp_path):
    """The dock shows no lambda or EMA rate: a continued model keeps those it was trained
    with (here by the CLI), and a learning rate the user changed in the dock is taken."""
    first = _job(pair, tmp_path / "m")
    first.config.cotrain_steps = 0
    first.config.lam, first.config.lam_warmup = 32.0, 0
    run_job(first, lambda p: None, lambda: False)
    again = _job(pair, tmp_path / "m")
    again.config = TrainConfig(steps=STEPS + 1, preset="tiny", crop=32, device="cpu", lr=3e-3,
                               auto_thresholds=False)
    prepare_resume(again)
    assert (again.config.lam, again.config.lam_warmup, again.config.ema_alpha,
            again.config.lr) == (32.0, 0, 0.2, 3e-3)
    assert run_job(again, lambda p: None, lambda: False).steps_done == STEPS + 1

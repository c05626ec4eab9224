"""Faults made to happen on purpose: each gives a clear message and loses nothing."""

import logging
import struct

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_semietpicker._reader import napari_get_reader
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.inference.predict import (
    PredictConfig,
    pick_tomogram,
    predict_heatmaps,
)
from napari_semietpicker.io.picks import picks_from_positions, read_picks_csv, write_picks_csv
from napari_semietpicker.io.tomogram import (
    Tomogram,
    bin_tomogram,
    normalize,
    read_tomogram,
    write_tomogram,
)
from napari_semietpicker.model.checkpoint import (
    ModelCard,
    load_model,
    load_trainer_state,
    save_model,
)
from napari_semietpicker.model.network import ModelConfig, build_model
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import check_training_set, prepare_volume
from napari_semietpicker.training.loop import Trainer

BLOB = [ParticleClass("blob", 60.0)]


@pytest.fixture()
def good_mrc(tmp_path):
    path = tmp_path / "good.mrc"
    write_tomogram(path, np.random.default_rng(0).normal(size=(16, 20, 24)), 13.48)
    return path


def _patched(path, offset: int, value: bytes, tmp_path, name: str):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(value)] = value
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


# -- tomograms -------------------------------------------------------------------------
def test_truncated_and_absurd_mrc_files_are_refused_by_name(good_mrc, tmp_path):
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes(good_mrc.read_bytes()[:2000])
    huge = _patched(good_mrc, 0, struct.pack("<i", 10**9), tmp_path, "huge.mrc")
    negative = _patched(good_mrc, 0, struct.pack("<i", -5), tmp_path, "negative.mrc")
    for path in (truncated, huge, negative):
        with pytest.raises(ValueError, match=f"{path.name}: not a readable MRC file"):
            read_tomogram(path)
        napari_get_reader(str(path))  # the probe itself never raises


def test_unsupported_mode_is_named(tmp_path):
    path = tmp_path / "complex.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((16, 16, 16), dtype=np.complex64))
    with pytest.raises(ValueError, match="complex.mrc: MRC mode 4 is not supported"):
        read_tomogram(path)


def test_nan_constant_and_tiny_volumes_are_refused(tmp_path):
    data = np.ones((16, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="t1: constant volume"):
        normalize(data, name="t1")
    data = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    data[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="t2: contains NaN"):
        normalize(data, name="t2")
    write_tomogram(tmp_path / "tiny.mrc", np.zeros((4, 64, 64)), 10.0)
    with pytest.raises(ValueError, match="tiny.mrc: volume .* is too small"):
        read_tomogram(tmp_path / "tiny.mrc")


# -- picks -----------------------------------------------------------------------------
def _volume(name="t", voxel_size=10.0, shape=(32, 40, 48)):
    data = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    return Tomogram(data, voxel_size, name)


def test_picks_outside_the_volume_and_unknown_classes_are_refused():
    outside = picks_from_positions(np.array([[100.0, 100.0, 5000.0]]), "t", "blob")
    with pytest.raises(ValueError, match="picks of t: 1 pick.* outside the volume"):
        prepare_volume(_volume(), outside, BLOB)
    unknown = picks_from_positions(np.array([[100.0, 100.0, 100.0]]), "t", "ribosom")
    with pytest.raises(ValueError, match="unknown class name.*ribosom"):
        prepare_volume(_volume(), unknown, BLOB)


def test_duplicate_picks_are_dropped_with_a_warning(caplog):
    zyx = np.array([[100.0, 100.0, 100.0], [101.0, 100.0, 100.0], [200.0, 200.0, 200.0]])
    with caplog.at_level(logging.WARNING):
        volume = prepare_volume(_volume(), picks_from_positions(zyx, "t", "blob"), BLOB)
    assert len(volume.positions) == 2
    assert "dropped 1 duplicate" in caplog.text


def test_mismatched_voxel_sizes_and_empty_classes(caplog):
    picks = picks_from_positions(np.array([[100.0, 100.0, 100.0]]), "a", "blob")
    a = prepare_volume(_volume("a"), picks, [*BLOB, ParticleClass("other", 40.0)])
    b = prepare_volume(_volume("b", voxel_size=13.0))
    with pytest.raises(ValueError, match=r"b \(13.0 A\)"):
        check_training_set([a], BLOB, [b])
    with caplog.at_level(logging.WARNING):
        check_training_set([a], [*BLOB, ParticleClass("other", 40.0)])
    assert "class other has no picks" in caplog.text


# -- models ----------------------------------------------------------------------------
@pytest.fixture()
def model_dir(tmp_path):
    config = ModelConfig(n_classes=1, preset="tiny")
    save_model(tmp_path / "m", build_model(config), ModelCard(BLOB, 10.0, config))
    return tmp_path / "m"


def test_truncated_or_missing_weights_are_reported(model_dir):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors: truncated or corrupted"):
        load_model(model_dir)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing weights"):
        load_model(model_dir)


class Payload:
    """An arbitrary object: unpickling it would run code of the file's choosing."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_in_trainer_state_are_refused(model_dir, capsys):
    torch.save({"step": 1, "evil": Payload()}, model_dir / "trainer_state.pt")
    with pytest.raises(ValueError, match="cannot resume from this file"):
        load_trainer_state(model_dir)
    assert "this must never run" not in capsys.readouterr().out


# -- memory ----------------------------------------------------------------------------
class _LimitedPool(torch.nn.Module):
    """A local stand-in network that 'runs out of memory' on large inputs."""

    class config:
        output_stride = 2
        n_classes = 1

    def __init__(self, max_side: int = 64, max_batch: int = 8):
        super().__init__()
        self.max_side, self.max_batch = max_side, max_batch
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        if max(x.shape[2:]) > self.max_side or x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.sigmoid(self.weight * torch.nn.functional.avg_pool3d(x, 2))


def test_prediction_retries_smaller_windows_after_out_of_memory(caplog):
    tomogram = _volume(shape=(64, 128, 128))
    card = ModelCard(BLOB, 10.0, ModelConfig(1, "tiny"))
    with caplog.at_level(logging.WARNING):
        peaks, heat = pick_tomogram(_LimitedPool(), card, tomogram,
                                    PredictConfig(window=256, batch_size=4))
    # batch 4 -> 2 -> 1, then windows 256 -> 128 -> 64: four retries
    assert caplog.text.count("out of memory") == 4
    direct = predict_heatmaps(_LimitedPool(), normalize(tomogram.data),
                              PredictConfig(window=64, batch_size=1))
    torch.testing.assert_close(heat, direct)


def test_training_halves_the_batch_after_out_of_memory(blob_set, tmp_path, caplog):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=3, batch_size=4, preset="tiny", crop=64), classes,
                      labelled, tmp_path)
    forward = trainer.forward_student.forward

    def limited(x):
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x)

    trainer.forward_student.forward = limited
    with caplog.at_level(logging.WARNING):
        result = trainer.run()
    assert result.steps_done == 3 and trainer.config.batch_size == 1
    assert caplog.text.count("out of memory") == 2
    assert load_model(tmp_path)[1].history["steps_done"] == 3


def test_out_of_memory_at_the_smallest_trainable_size_is_raised(blob_set, tmp_path, caplog):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=3, batch_size=1, preset="tiny", crop=64), classes,
                      labelled, tmp_path)

    def never_fits(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    trainer.forward_student.forward = never_fits
    with caplog.at_level(logging.WARNING), pytest.raises(torch.cuda.OutOfMemoryError):
        trainer.run()
    # one crop of 32^3 would leave BatchNorm one value per channel: not tried
    assert "retrying" not in caplog.text and tuple(trainer.labelled.crop_shape) == (64, 64, 64)


def test_a_batch_batchnorm_cannot_train_on_is_refused_clearly(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    with pytest.raises(ValueError, match=r"batch 1 of crops \(32, 32, 32\) is too small"):
        Trainer(TrainConfig(batch_size=1, preset="tiny", crop=32), classes, labelled, tmp_path)
    Trainer(TrainConfig(batch_size=2, preset="tiny", crop=32), classes, labelled, tmp_path)


# -- voxel size ------------------------------------------------------------------------
@pytest.mark.parametrize("tomogram_voxel,model_voxel,level", [
    (20.0, 10.0, logging.WARNING),  # a finer model: the tomogram is upsampled
    (10.0, 20.0, logging.INFO),  # a model trained binned 2x: binned inference
])
def test_other_voxel_size_is_resampled_and_picks_stay_in_angstrom(
        caplog, tomogram_voxel, model_voxel, level):
    shape, center = (32, 48, 64), np.array([14.0, 20.0, 40.0])
    blob_sigma = 40.0 / tomogram_voxel  # 40 A whatever the voxel size
    grid = np.indices(shape, dtype=np.float32)
    r2 = sum((grid[a] - center[a]) ** 2 for a in range(3))
    # contrast under normalize's 5-sigma clip, so the blob's top is not a flat plateau
    data = np.exp(-r2 / (2 * blob_sigma**2)) + 0.2 * np.random.default_rng(0).normal(size=shape)
    tomogram = Tomogram(data.astype(np.float32), tomogram_voxel, "other")
    card = ModelCard(BLOB, model_voxel, ModelConfig(1, "tiny"))
    with caplog.at_level(logging.INFO):
        peaks, _ = pick_tomogram(_LimitedPool(max_side=1024), card, tomogram,
                                 PredictConfig(window=128))
    assert [r.levelno for r in caplog.records if "resampling" in r.message] == [level]
    best = peaks.picks.sort_values("score").iloc[-1]
    assert np.allclose([best.z, best.y, best.x], center * tomogram_voxel, atol=12.0)


def test_a_binned_model_sees_a_finer_tomogram_as_it_saw_its_binned_training_data():
    # noise is where it matters: averaging 8 voxels lowers it, so the result is renormalised
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(64, 96, 128)).astype(np.float32)
    tomogram = Tomogram(data, 10.0, "noise")
    card = ModelCard(BLOB, 20.0, ModelConfig(1, "tiny"))
    seen = []

    class Recorder(_LimitedPool):
        def forward(self, x):
            seen.append(x.clone())
            return super().forward(x)

    pick_tomogram(Recorder(max_side=1024), card, tomogram, PredictConfig(window=128, tta=False))
    binned = normalize(bin_tomogram(tomogram, 2).data)  # what `train --level 1` trains on
    assert len(seen) == 1 and binned.shape == (32, 48, 64)
    np.testing.assert_allclose(seen[0][0, 0, :32, :48, :64].numpy(), binned, atol=1e-5)


# -- fuzzing ---------------------------------------------------------------------------
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 1100), st.integers(0, 255)), min_size=1,
                      max_size=12), cut=st.one_of(st.none(), st.integers(0, 4000)))
def test_fuzzed_mrc_files_give_a_tomogram_or_a_clear_error(good_mrc, tmp_path, edits, cut):
    data = bytearray(good_mrc.read_bytes())
    for offset, value in edits:
        data[offset] = value
    path = tmp_path / "fuzzed.mrc"
    path.write_bytes(bytes(data[:cut] if cut is not None else data))
    try:
        tomogram = read_tomogram(path)
    except ValueError as err:
        assert "fuzzed.mrc" in str(err)
    else:
        assert tomogram.data.ndim == 3 and tomogram.voxel_size > 0
    napari_get_reader(str(path))  # must not raise


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-eExyz_abcdn\n\" ")),
                    max_size=40), position=st.integers(0, 300))
def test_fuzzed_picks_csv_give_a_table_or_a_clear_error(tmp_path, text, position):
    path = tmp_path / "picks.csv"
    table = picks_from_positions(np.array([[1.0, 2.0, 3.0], [40.5, 50.25, 60.0]]), "t", "blob")
    write_picks_csv(table, path)
    original = path.read_text()
    path.write_text(original[:position] + text + original[position:])
    try:
        picks = read_picks_csv(path)
    except ValueError as err:
        assert "picks.csv" in str(err)
    else:
        assert isinstance(picks, pd.DataFrame)
        assert np.isfinite(picks[["x", "y", "z"]].to_numpy(float)).all()
    napari_get_reader(str(path))

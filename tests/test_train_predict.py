import logging

import numpy as np
import pandas as pd
import pytest
import torch

from napari_semietpicker.geometry import Grid
from napari_semietpicker.inference.predict import (
    PeakCache,
    PredictConfig,
    peaks_from_heatmaps,
    pick_tomogram,
    plan_axis,
    predict_heatmaps,
)
from napari_semietpicker.io.tomogram import bin_tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import (
    load_card,
    load_model,
    load_trainer_state,
    save_thresholds,
)
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

TINY = dict(preset="tiny", crop=64, batch_size=2, checkpoint_every=1000)


@pytest.fixture(scope="module")
def trained(blob_set, tmp_path_factory):
    """A tiny model trained on two blob tomograms: shared by the tests below."""
    out = tmp_path_factory.mktemp("model")
    classes = blob_set["classes"]
    labelled = [prepare_volume(t, blob_set["picks"], classes) for t in blob_set["tomograms"][:2]]
    trainer = Trainer(TrainConfig(steps=150, lr=3e-3, **TINY), classes, labelled, out)
    result = trainer.run()
    return out, result


def test_training_lowers_the_loss_and_writes_a_model(trained):
    out, result = trained
    assert result.steps_done == 150 and not result.stopped
    assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:10])
    card = load_card(out)
    assert [c.name for c in card.classes] == ["big", "small"]
    assert card.voxel_size == 10.0 and card.history["steps_done"] == 150


def test_trained_model_finds_held_out_particles(trained, blob_set):
    out, _ = trained
    model, card = load_model(out)
    test = blob_set["tomograms"][2]
    peaks, heat = pick_tomogram(model, card, test, PredictConfig(window=64))
    assert heat.shape == (2, 32, 48, 48)
    truth = blob_set["picks"][blob_set["picks"].experiment == test.name]
    result = evaluate(peaks.at(0.3), truth, card.classes)
    # Blobs are easy: far above chance (random picks of this count score ~0).
    assert result.per_class["f1_0.5"].mean() > 0.6


def test_student_trains_channels_last_and_its_file_holds_the_same_weights(blob_set, tmp_path):
    """Channels-last weights (the faster layout) are saved plain: safetensors needs
    contiguous tensors, and the file reloads to the very weights trained."""
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=2, average_last=0, **TINY), classes, labelled, tmp_path)
    trainer.run()
    convs = [p for p in trainer.student.parameters() if p.dim() == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in convs)
    assert any(not p.is_contiguous() for p in convs)
    model, _ = load_model(tmp_path)
    saved = model.state_dict()
    for name, value in trainer.student.state_dict().items():
        assert torch.equal(saved[name], value), name


def test_a_reviewed_tomogram_trains_on_its_answers_and_thresholds_come_from_the_complete(
        blob_set, tmp_path):
    """A partial volume (review answers only) trains with finite losses, and the thresholds
    are chosen on the fully labelled tomogram alone: the reviewed one's unlabelled
    particles would count as false positives there."""
    classes = blob_set["classes"]
    complete = prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)
    answers = blob_set["picks"][blob_set["picks"].experiment == "blob_1"].iloc[:2]
    reviewed = prepare_volume(blob_set["tomograms"][1], answers, classes, partial=True)
    assert reviewed.partial and len(reviewed.positions) == 2
    trainer = Trainer(TrainConfig(steps=4, **TINY), classes, [complete, reviewed], tmp_path)
    result = trainer.run()
    assert result.steps_done == 4 and np.isfinite(result.losses).all()
    assert load_card(tmp_path).history["thresholds_chosen_on"] == ["blob_0"]


def test_stop_flag_ends_training_with_a_usable_model(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=1000, **TINY), classes, labelled, tmp_path)
    asked = iter(range(100))
    result = trainer.run(should_stop=lambda: next(asked) >= 3)  # stop before the 4th step
    assert result.stopped and result.reason == "stopped" and result.steps_done == 3
    model, card = load_model(tmp_path)
    assert card.history["steps_done"] == 3


def test_resume_continues_exactly_where_it_stopped(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    config = TrainConfig(steps=4, cotrain_steps=4, ema_alpha=0.2, **TINY)
    straight = Trainer(config, classes, labelled, tmp_path / "straight", unlabelled)
    straight.prefetch_depth = 2  # batches made in a thread, as on a GPU: the same data
    straight.run()
    # The same run stopped during co-training, then resumed in a new Trainer.
    first = Trainer(config, classes, labelled, tmp_path / "resumed", unlabelled)
    assert first.run(should_stop=lambda: first.step >= 6).steps_done == 6
    assert load_trainer_state(tmp_path / "resumed")["step"] == 6
    trainer = Trainer(config, classes, labelled, tmp_path / "resumed", unlabelled, resume=True)
    assert trainer.step == 6 and trainer.teacher is not None
    assert trainer.run().steps_done == 8
    # Every step's data depends on its step number alone, so the result is the same.
    np.testing.assert_allclose(trainer.losses, straight.losses, rtol=1e-5)
    resumed = load_model(tmp_path / "resumed")[0].state_dict()
    for name, value in load_model(tmp_path / "straight")[0].state_dict().items():
        torch.testing.assert_close(resumed[name], value)


def test_continuing_after_cotraining_began_keeps_its_start_and_teacher(blob_set, tmp_path):
    """Steps are totals from the model's first step: once co-training has begun, another
    burn-in length is not taken up (that would drop the EMA teacher); without unlabelled
    tomograms the run cannot go on."""
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    config = TrainConfig(steps=2, cotrain_steps=2, auto_thresholds=False, **TINY)
    Trainer(config, classes, labelled, tmp_path, unlabelled).run()
    saved = load_model(tmp_path)[0].state_dict()
    longer = TrainConfig(steps=5, cotrain_steps=3, auto_thresholds=False, **TINY)
    trainer = Trainer(longer, classes, labelled, tmp_path, unlabelled, resume=True)
    assert trainer.config.steps == 2 and trainer.total_steps == 5 and trainer.teacher is not None
    for name, value in trainer.teacher.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert trainer.run().steps_done == 5
    assert load_card(tmp_path).history["train_config"]["steps"] == 2
    with pytest.raises(ValueError, match="co-training began at step 2 and needs unlabelled"):
        Trainer(TrainConfig(steps=2, cotrain_steps=9, **TINY), classes, labelled, tmp_path,
                resume=True)


def test_ablation_settings_train_on_the_same_crops(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    batches = {}
    for dropblock in (False, True):
        config = TrainConfig(steps=2, cotrain_steps=2, dropblock=dropblock, **TINY)
        trainer = Trainer(config, classes, labelled, tmp_path / str(dropblock), unlabelled)
        batches[dropblock] = [trainer.make_batch(step) for step in range(4)]
    for plain, dropped in zip(batches[False], batches[True]):
        torch.testing.assert_close(plain.image, dropped.image)
        torch.testing.assert_close(plain.target, dropped.target)
    assert batches[True][1].weak is None  # burn-in: labelled crops only
    weak, plain, dropped = batches[False][3].weak, batches[False][3].strong, batches[True][3].strong
    torch.testing.assert_close(weak, batches[True][3].weak)
    # Without DropBlock the strong view differs from the weak one (intensity, blur); with it,
    # it equals that view except in the dropped blocks (about the default 10% of voxels).
    assert not torch.equal(weak, plain)
    changed = (dropped != plain).float().mean().item()
    assert 0.05 < changed < 0.15


def test_resume_with_other_classes_is_refused_clearly(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    Trainer(TrainConfig(steps=1, **TINY), classes, labelled, tmp_path).run()
    big_only = blob_set["picks"][blob_set["picks"].particle_type == "big"]
    fewer = [prepare_volume(blob_set["tomograms"][0], big_only, classes[:1])]
    with pytest.raises(ValueError, match="cannot resume: it was trained with other classes"):
        Trainer(TrainConfig(steps=2, **TINY), classes[:1], fewer, tmp_path, resume=True)


def test_resume_at_another_voxel_size_is_refused_clearly(blob_set, tmp_path):
    classes = blob_set["classes"]
    tomogram = blob_set["tomograms"][0]
    Trainer(TrainConfig(steps=1, **TINY), classes,
            [prepare_volume(tomogram, blob_set["picks"], classes)], tmp_path).run()
    binned = [prepare_volume(bin_tomogram(tomogram, 2), blob_set["picks"], classes)]
    with pytest.raises(ValueError, match="trained at 10 A voxels and these tomograms are at 20 A"):
        Trainer(TrainConfig(steps=2, **TINY), classes, binned, tmp_path, resume=True)


def test_fine_tuning_starts_from_the_given_model(trained, blob_set, tmp_path):
    source, _ = trained
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][2], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=2, **TINY), classes, labelled, tmp_path / "tuned",
                      init_from=source)
    start = load_model(source)[0].state_dict()
    for name, value in trainer.student.state_dict().items():
        torch.testing.assert_close(value, start[name])
    assert trainer.step == 0
    trainer.run()
    assert load_card(tmp_path / "tuned").history["fine_tuned_from"] == str(source.resolve())
    with pytest.raises(ValueError, match="cannot fine-tune from this model"):
        Trainer(TrainConfig(steps=2, **{**TINY, "preset": "light"}), classes, labelled,
                tmp_path / "other", init_from=source)


def test_same_seed_same_weights(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    weights = []
    for run in ("a", "b"):
        Trainer(TrainConfig(steps=3, **TINY), classes, labelled, tmp_path / run).run()
        weights.append(load_model(tmp_path / run)[0].state_dict())
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name])


def test_cotraining_without_unlabelled_falls_back_with_a_message(blob_set, tmp_path, caplog):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(TrainConfig(steps=2, cotrain_steps=5, **TINY), classes, labelled,
                          tmp_path)
    assert "no unlabelled tomograms" in caplog.text
    assert trainer.total_steps == 2
    assert trainer.run().steps_done == 2 and not trainer.cotrains
    assert load_card(tmp_path).history.get("saved_model") != "teacher"


def test_cotraining_saves_the_ema_teacher(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    phases = []
    trainer = Trainer(TrainConfig(steps=3, cotrain_steps=3, ema_alpha=0.5, **TINY), classes,
                      labelled, tmp_path, unlabelled)
    trainer.run(on_progress=lambda p: phases.append((p.phase, p.loss_unlabelled)))
    assert [p for p, _ in phases] == ["burn-in"] * 3 + ["co-training"] * 3
    assert all(u is not None and np.isfinite(u) for _, u in phases[3:])
    saved, _ = load_model(tmp_path)
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(value, trainer.teacher.state_dict()[name])
    assert not all(torch.equal(v, trainer.student.state_dict()[k])
                   for k, v in saved.state_dict().items() if v.dtype.is_floating_point)


def test_nan_loss_stops_and_keeps_the_last_good_model(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    trainer = Trainer(TrainConfig(steps=4, **TINY), classes, labelled, tmp_path)
    trainer.run()
    good = load_model(tmp_path)[0].state_dict()
    trainer.config.steps = 8
    trainer.total_steps = 8
    labelled[0].data[:] = np.nan  # poison the data
    result = trainer.run()
    assert result.reason.startswith("diverged") and result.steps_done == 4
    for name, value in load_model(tmp_path)[0].state_dict().items():
        torch.testing.assert_close(value, good[name])


def test_window_plan_covers_each_axis_with_few_windows():
    assert plan_axis(64, 256, 0.25) == (64, [0])
    side, starts = plan_axis(640, 256, 0.25)  # a CZII side, padded to 640
    assert side == 256 and starts == [0, 192, 384]
    side, starts = plan_axis(640, 160, 0.25)
    assert side == 160 and starts[0] == 0 and starts[-1] == 480 and len(starts) == 5
    for length in (96, 288, 416, 1024):
        side, starts = plan_axis(length, 128, 0.25)
        assert side % 32 == 0 and starts[-1] + side == length
        assert all(a + side - b >= 0.25 * side - 1 for a, b in zip(starts, starts[1:]))


class _Pool(torch.nn.Module):
    """A shift-equivariant stand-in network: blending must reproduce it exactly."""

    class config:
        output_stride = 2
        n_classes = 1

    def forward(self, x):
        return torch.sigmoid(torch.nn.functional.avg_pool3d(x, 2))


def test_sliding_window_equals_whole_volume_for_a_local_model():
    volume = np.random.default_rng(0).normal(size=(70, 100, 130)).astype(np.float32)
    heat = predict_heatmaps(_Pool(), volume, PredictConfig(window=64, overlap=0.25))
    assert heat.shape == (1, 35, 50, 65)
    whole = _Pool()(torch.from_numpy(volume)[None, None])[0]
    torch.testing.assert_close(heat, whole, atol=1e-5, rtol=1e-5)


def test_peaks_map_to_angstrom_and_thresholds_filter_cached_peaks(trained):
    out, _ = trained
    _, card = load_model(out)
    heat = torch.zeros(2, 20, 30, 40)
    heat[0, 5, 6, 7] = 0.9
    heat[1, 10, 11, 12] = 0.4
    cache = peaks_from_heatmaps(heat, card, "t", Grid(13.5))
    big = cache.picks[cache.picks.particle_type == "big"].iloc[0]
    # output index i -> input voxel 2i + 0.5 -> Angstrom * 13.5
    assert (big.z, big.y, big.x) == pytest.approx((10.5 * 13.5, 12.5 * 13.5, 14.5 * 13.5))
    assert len(cache.at(0.5)) == 1 and len(cache.at(0.3)) == 2
    assert list(cache.at({"big": 0.95, "small": 0.3}).particle_type) == ["small"]
    assert isinstance(cache, PeakCache) and isinstance(cache.at(0.1), pd.DataFrame)


def test_saved_thresholds_are_used_and_survive_more_training(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    config = TrainConfig(steps=2, auto_thresholds=False, **TINY)  # thresholds set by hand
    Trainer(config, classes, labelled, tmp_path).run()
    assert load_card(tmp_path).class_thresholds() == {"big": 0.3, "small": 0.3}
    card = save_thresholds(tmp_path, {"small": 0.72})
    assert card.class_thresholds() == {"big": 0.3, "small": 0.72}
    assert load_card(tmp_path).class_thresholds() == {"big": 0.3, "small": 0.72}
    with pytest.raises(ValueError, match="the model has no class medium"):
        save_thresholds(tmp_path, {"medium": 0.5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        save_thresholds(tmp_path, {"big": 1.5})
    config.steps = 3
    Trainer(config, classes, labelled, tmp_path, resume=True).run()
    card = load_card(tmp_path)
    assert card.history["steps_done"] == 3 and card.thresholds == {"small": 0.72}

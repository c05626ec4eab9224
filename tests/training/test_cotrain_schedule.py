"""The co-training schedules: the teacher follows early, the consistency weight ramps up;
peak pseudo-labels."""

import copy
import json

import numpy as np
import pytest
import torch

from napari_semietpicker.model.checkpoint import load_card, load_model
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer
from napari_semietpicker.training.semi import (
    ema_rate,
    peak_pseudo_labels,
    recompute_batchnorm_statistics,
    unlabelled_weight_factor,
)

TINY = dict(preset="tiny", crop=64, batch_size=2, checkpoint_every=1000, auto_thresholds=False)


def test_ramp_rate_is_a_running_mean_then_the_floor():
    rates = [ema_rate(t, 0.01) for t in range(300)]
    assert rates[0] == 1.0 and rates[1] == 0.5 and rates[9] == pytest.approx(0.1)
    assert rates[99] == pytest.approx(0.01) and rates[299] == 0.01
    assert ema_rate(5, 0.01, "constant") == 0.01
    # A running mean: the weights theta_0..theta_T get equal shares 1 / (T + 1).
    teacher = 0.0
    for t, value in enumerate([3.0, 5.0, 10.0]):
        teacher += ema_rate(t, 0.001) * (value - teacher)
    assert teacher == pytest.approx(6.0)
    with pytest.raises(ValueError, match="schedule"):
        ema_rate(0, 0.01, "cosine")


def test_consistency_weight_ramps_up_to_one():
    factors = [unlabelled_weight_factor(t, 100) for t in range(0, 150, 10)]
    assert factors[0] == pytest.approx(np.exp(-5.0))
    assert all(a < b for a, b in zip(factors[:10], factors[1:11], strict=True))
    assert factors[10:] == [1.0] * 5
    assert unlabelled_weight_factor(0, 0) == 1.0


def test_after_one_cotraining_step_the_teacher_is_the_student(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    trainer = Trainer(TrainConfig(steps=2, cotrain_steps=1, ema_alpha=1e-3, **TINY), classes,
                      labelled, tmp_path, unlabelled)
    trainer.run()
    student = dict(trainer.student.named_parameters())
    for name, value in trainer.teacher.named_parameters():  # (its BatchNorm statistics are
        torch.testing.assert_close(value, student[name])    # recomputed at the end)
    # The paper's constant rate leaves the teacher almost the burn-in model.
    constant = Trainer(TrainConfig(steps=2, cotrain_steps=1, ema_alpha=1e-3,
                                   ema_schedule="constant", **TINY), classes, labelled,
                       tmp_path / "constant", unlabelled)
    constant.run()
    student = dict(constant.student.named_parameters())
    assert not all(torch.equal(v, student[k]) for k, v in constant.teacher.named_parameters())


def _bump(shape, center, height, sigma):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return height * np.exp(-((grid - center) ** 2).sum(-1) / (2 * sigma**2))


def test_peak_pseudo_labels_redraw_confident_peaks_and_leave_unsure_ones_unknown():
    shape, sigma = (24, 24, 24), 1.5
    sure, unsure, faint = np.array([6, 6, 6]), np.array([17, 17, 17]), np.array([6, 17, 12])
    heat = np.zeros((1, 2, *shape), dtype=np.float32)
    heat[0, 0] = np.maximum.reduce([_bump(shape, sure, 0.9, 2.5), _bump(shape, unsure, 0.4, 2.5),
                                    _bump(shape, faint, 0.1, 2.5)])
    target = peak_pseudo_labels(torch.from_numpy(heat), [3, 3], np.array([sigma, sigma]),
                                np.array([0.6, 0.6])).numpy()[0]
    # The confident peak becomes the unit Gaussian a label would be, of the class's sigma
    # (drawn out to 3 sigma).
    def distance(point):
        return np.linalg.norm(np.moveaxis(np.indices(shape), 0, -1) - point, axis=-1)

    inside = distance(sure) < 2.9 * sigma
    np.testing.assert_allclose(target[0][inside], _bump(shape, sure, 1.0, sigma)[inside],
                               atol=1e-5)
    assert target[0][tuple(sure)] == pytest.approx(1.0)
    # The unsure one's sphere (radius 2 sigma) is unknown; beyond it, background.
    near = distance(unsure)
    assert np.isnan(target[0][near <= 2 * sigma - 0.5]).all()
    assert not np.isnan(target[0][near > 2 * sigma + 0.5]).any()
    # The faint one is background, and so is the class without peaks.
    assert target[0][tuple(faint)] == 0.0
    assert (target[1] == 0).all()


def test_peak_pseudo_labels_fix_their_thresholds_when_cotraining_begins(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    with pytest.raises(ValueError, match="pseudo-labels must be one of soft, peaks"):
        Trainer(TrainConfig(pseudo_labels="hard", **TINY), classes, labelled, tmp_path,
                unlabelled)
    config = TrainConfig(steps=2, cotrain_steps=1, pseudo_labels="peaks", **TINY)
    Trainer(config, classes, labelled, tmp_path, unlabelled).run()
    card = load_card(tmp_path)
    chosen = card.history["pseudo_label_thresholds"]
    assert set(chosen) == {c.name for c in classes}
    # A continued run keeps them (the teacher it resumes has moved since they were chosen).
    card.history["pseudo_label_thresholds"] = {c.name: 0.25 + 0.5 * i
                                               for i, c in enumerate(classes)}
    (tmp_path / "config.json").write_text(json.dumps(card.to_dict()))
    resumed = Trainer(TrainConfig(steps=2, cotrain_steps=2, pseudo_labels="peaks", **TINY),
                      classes, labelled, tmp_path, unlabelled, resume=True)
    np.testing.assert_allclose(resumed.pseudo_thresholds, [0.25 + 0.5 * i
                                                           for i in range(len(classes))])
    resumed.run()
    assert load_card(tmp_path).history["pseudo_label_thresholds"][classes[0].name] == 0.25


def test_cotraining_at_weight_zero_is_supervised_training_with_an_averaged_teacher(
        blob_set, tmp_path):
    """The ablation that tells the EMA teacher's averaging from its pseudo-labels."""
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    with pytest.raises(ValueError, match="unlabelled loss weight must be >= 0"):
        Trainer(TrainConfig(unlabelled_weight=-1.0, **TINY), classes, labelled, tmp_path,
                unlabelled)
    supervised = Trainer(TrainConfig(steps=4, **TINY), classes, labelled, tmp_path / "s")
    supervised.run()
    progress = []
    averaged = Trainer(TrainConfig(steps=2, cotrain_steps=2, unlabelled_weight=0.0, **TINY),
                       classes, labelled, tmp_path / "w0", unlabelled)
    averaged.run(on_progress=progress.append)
    assert [p.phase for p in progress] == ["burn-in"] * 2 + ["co-training"] * 2
    assert all(p.loss_unlabelled is None for p in progress)
    student, reference = averaged.student.state_dict(), supervised.student.state_dict()
    for name, value in student.items():
        torch.testing.assert_close(value, reference[name])
    assert not all(torch.equal(v, student[k]) for k, v in averaged.teacher.named_parameters())
    # (the mean of the last two students)


def test_batchnorm_statistics_are_recomputed_as_the_batches_mean_and_variance():
    norm = torch.nn.BatchNorm3d(1)
    norm.running_mean.fill_(5.0)  # stale statistics, as an EMA of other weights leaves
    norm.running_var.fill_(9.0)
    generator = torch.Generator().manual_seed(0)
    batches = [2.0 + 3.0 * torch.randn(2, 1, 8, 8, 8, generator=generator) for _ in range(4)]
    recompute_batchnorm_statistics(norm, batches)
    data = torch.cat(batches)
    assert float(norm.running_mean) == pytest.approx(float(data.mean()), abs=1e-5)
    assert float(norm.running_var) == pytest.approx(float(data.var()), rel=0.02)
    assert norm.momentum == 0.1  # left as it was


def test_a_cotrained_teacher_is_saved_with_the_statistics_of_its_own_weights(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    trainer = Trainer(TrainConfig(steps=2, cotrain_steps=3, **TINY), classes, labelled,
                      tmp_path, unlabelled)
    trainer.run()
    saved, _ = load_model(tmp_path)
    again = copy.deepcopy(saved)
    recompute_batchnorm_statistics(again, trainer.statistics_batches())
    buffers = dict(again.named_buffers())
    for name, value in saved.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(value, buffers[name])
    # They are not the EMA of the students' statistics that co-training kept.
    student = dict(trainer.student.named_buffers())
    assert any(not torch.allclose(value, student[name]) for name, value in
               saved.named_buffers() if name.endswith("running_mean"))


@pytest.mark.parametrize("better", ["teacher", "student"])
def test_the_model_that_scores_higher_on_the_labelled_tomograms_is_saved(
        blob_set, tmp_path, monkeypatch, better):
    """After co-training, the teacher or the student: the one whose labelled picks score
    higher; the teacher goes on in the resume state either way."""
    from napari_semietpicker.training import loop

    classes = blob_set["classes"]
    labelled = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes)]
    unlabelled = [prepare_volume(blob_set["tomograms"][1])]
    models = {}
    real = loop.thresholds_and_labelled_score

    def scored(model, *args, **kwargs):  # the real thresholds; the score says who is better
        thresholds, _ = real(model, *args, **kwargs)
        name = "teacher" if model is trainer.teacher else "student"
        models[name] = copy.deepcopy(model.state_dict())
        return {c: 0.3 if name == "teacher" else 0.2 for c in thresholds}, \
            float(name == better)

    monkeypatch.setattr(loop, "thresholds_and_labelled_score", scored)
    config = dict(TINY, auto_thresholds=True)
    trainer = Trainer(TrainConfig(steps=2, cotrain_steps=2, **config), classes, labelled,
                      tmp_path, unlabelled)
    trainer.run()
    card = load_card(tmp_path)
    assert card.history["saved_model"] == better
    assert card.history["labelled_scores"] == {"teacher": float(better == "teacher"),
                                               "student": float(better == "student")}
    assert set(card.thresholds.values()) == {0.3 if better == "teacher" else 0.2}
    saved, _ = load_model(tmp_path)
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(value, models[better][name])
    assert any(not torch.equal(v, models["student"][k])
               for k, v in models["teacher"].items() if v.is_floating_point())
    # Continued (longer), co-training goes on from the teacher, whichever was saved.
    continued = Trainer(TrainConfig(steps=2, cotrain_steps=3, **config), classes, labelled,
                        tmp_path, unlabelled, resume=True)
    for name, value in continued.teacher.state_dict().items():
        torch.testing.assert_close(value, models["teacher"][name])

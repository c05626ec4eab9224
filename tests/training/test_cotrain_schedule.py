"""The co-training schedules: the teacher follows early, the consistency weight ramps up."""

import numpy as np
import pytest
import torch

from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import TrainConfig, Trainer
from napari_semietpicker.training.semi import ema_rate, unlabelled_weight_factor

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
    student = trainer.student.state_dict()
    for name, value in trainer.teacher.state_dict().items():
        torch.testing.assert_close(value, student[name])
    # The paper's constant rate leaves the teacher almost the burn-in model.
    constant = Trainer(TrainConfig(steps=2, cotrain_steps=1, ema_alpha=1e-3,
                                   ema_schedule="constant", **TINY), classes, labelled,
                       tmp_path / "constant", unlabelled)
    constant.run()
    student = constant.student.state_dict()
    assert not all(torch.equal(v, student[k]) for k, v in constant.teacher.state_dict().items()
                   if v.dtype.is_floating_point)

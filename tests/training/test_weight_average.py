"""A supervised run averages its weights over its last steps and saves the average or its
last weights, whichever scores higher on the labelled tomograms."""

import copy

import pytest
import torch

from napari_semietpicker.model.checkpoint import load_card, load_model
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

TINY = dict(preset="tiny", crop=64, batch_size=2, checkpoint_every=1000)


@pytest.fixture(autouse=True)
def few_statistics_crops(monkeypatch):
    """The average's BatchNorm statistics from 4 crops, not 200: these tests are about
    its weights."""
    from napari_semietpicker.training import loop

    monkeypatch.setattr(loop, "STATISTICS_CROPS", 4)


@pytest.fixture
def labelled(blob_set):
    return [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], blob_set["classes"])]


@pytest.fixture
def scores(monkeypatch) -> dict:
    """The choice between the average and the student without predicting: each scores
    what ``scores`` holds for it (0 unless set) at thresholds 0.3 (average) or 0.2
    (student); ``scores["models"]`` keeps the weights each was scored with."""
    from napari_semietpicker.training import loop

    scores: dict = {"models": {}}

    def scored(model, card, *args, **kwargs):
        trainer = scores["trainer"]
        name = "average" if model is trainer.teacher else "student"
        scores["models"][name] = copy.deepcopy(model.state_dict())
        threshold = 0.3 if name == "average" else 0.2
        return {c.name: threshold for c in card.classes}, float(scores.get(name, 0.0))

    monkeypatch.setattr(loop, "thresholds_and_labelled_score", scored)
    return scores


def _students_after_each_step(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """Run ``trainer``; the student's parameters after each step."""
    students = []
    trainer.run(on_progress=lambda progress: students.append(
        {name: p.detach().clone() for name, p in trainer.student.named_parameters()}))
    return students


def test_the_average_is_the_mean_of_the_students_of_the_last_steps(blob_set, labelled,
                                                                    tmp_path, scores):
    config = TrainConfig(steps=6, average_last=0.5, auto_thresholds=False, **TINY)
    trainer = Trainer(config, blob_set["classes"], labelled, tmp_path)
    # Without a threshold choice nothing could tell whether the average is better.
    assert trainer.average_from is None
    config = TrainConfig(steps=6, average_last=0.5, **TINY)
    trainer = scores["trainer"] = Trainer(config, blob_set["classes"], labelled, tmp_path)
    assert trainer.average_from == 3
    students = _students_after_each_step(trainer)
    assert len(students) == 6
    for name, value in trainer.teacher.named_parameters():
        mean = torch.stack([students[step][name] for step in (3, 4, 5)]).mean(dim=0)
        torch.testing.assert_close(value, mean)
    assert load_card(tmp_path).history["average_from_step"] == 3


def test_no_average_without_a_fully_labelled_tomogram(blob_set, tmp_path):
    classes = blob_set["classes"]
    partial = [prepare_volume(blob_set["tomograms"][0], blob_set["picks"], classes,
                              partial=True)]
    assert Trainer(TrainConfig(steps=6, **TINY), classes, partial, tmp_path).average_from is None
    with pytest.raises(ValueError, match="averaged fraction"):
        Trainer(TrainConfig(steps=6, average_last=1.5, **TINY), classes, partial, tmp_path)


def test_a_stopped_and_continued_run_averages_as_an_uninterrupted_one(blob_set, labelled,
                                                                     tmp_path, scores):
    classes = blob_set["classes"]
    config = dict(steps=6, average_last=0.5, **TINY)
    whole = scores["trainer"] = Trainer(TrainConfig(**config), classes, labelled,
                                        tmp_path / "whole")
    whole.run()
    parts = Trainer(TrainConfig(**config), classes, labelled, tmp_path / "parts")
    parts.run(should_stop=lambda: parts.step >= 4)  # stopped inside the average
    assert load_model(tmp_path / "parts")  # the stopped run saved a usable model
    continued = scores["trainer"] = Trainer(TrainConfig(**config), classes, labelled,
                                            tmp_path / "parts", resume=True)
    assert continued.teacher is not None and continued.average_from == 3
    continued.run()
    expected = dict(whole.teacher.named_parameters())
    for name, value in continued.teacher.named_parameters():
        torch.testing.assert_close(value, expected[name])


@pytest.mark.parametrize("better", ["average", "student"])
def test_the_supervised_model_that_scores_higher_on_the_labelled_tomograms_is_saved(
        blob_set, labelled, tmp_path, scores, better):
    scores[better] = 1.0
    trainer = scores["trainer"] = Trainer(TrainConfig(steps=4, average_last=0.5, **TINY),
                                          blob_set["classes"], labelled, tmp_path)
    trainer.run()
    card = load_card(tmp_path)
    assert card.history["saved_model"] == better
    assert card.history["labelled_scores"] == {"average": float(better == "average"),
                                               "student": float(better == "student")}
    assert set(card.thresholds.values()) == {0.3 if better == "average" else 0.2}
    assert set(card.history["labelled_thresholds"]["average"].values()) == {0.3}
    models = scores["models"]
    saved, _ = load_model(tmp_path)
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(value, models[better][name])
    assert any(not torch.equal(v, models["student"][k])
               for k, v in models["average"].items() if v.is_floating_point())

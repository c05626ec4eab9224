"""Template matching finds particles whose answer is known."""

import numpy as np
import pytest

from napari_semietpicker.classes import load_classes
from napari_semietpicker.inference.template_matching import (
    MatchConfig,
    class_templates,
    match_tomogram,
    rotation_set,
)
from napari_semietpicker.inference.thresholds import choose_thresholds
from napari_semietpicker.io.tomogram import Tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.simulate import simulate_tomogram

CZII = {c.name: c for c in load_classes("czii")}


def test_a_template_in_noise_scores_its_expected_correlation_at_its_centre():
    ribosome = CZII["ribosome"]
    templates, mask = class_templates(ribosome, 20.0, rotation_set(1))
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 1.0, (40, 48, 56)).astype(np.float32)
    half = mask.shape[0] // 2
    centre = np.array([17, 25, 30])
    volume[tuple(slice(c - half, c + half + 1) for c in centre)] += templates[0]
    result = match_tomogram(Tomogram(volume, 20.0, "t"), [ribosome], MatchConfig(rotations=1))
    top = result.peaks.picks.iloc[0]
    # unit-variance signal in unit-variance noise: NCC = 1 / sqrt(1 + 1)
    assert top.score == pytest.approx(2**-0.5, abs=0.05)
    assert np.array([top.z, top.y, top.x]) / 20.0 == pytest.approx(centre, abs=0.5)


def test_matching_finds_simulated_particles():
    classes = [CZII["ribosome"], CZII["virus-like-particle"]]
    tomogram, picks = simulate_tomogram((40, 128, 128), 20.0, classes, snr=0.1, seed=3,
                                        density=3.0)
    result = match_tomogram(tomogram, classes, MatchConfig(rotations=4))
    evaluation = evaluate(result.peaks.at(choose_thresholds(result.peaks.picks, picks, classes)),
                          picks, classes)
    fbeta = dict(zip(evaluation.per_class["particle_type"], evaluation.per_class["fbeta"]))
    assert fbeta["virus-like-particle"] >= 0.9 and fbeta["ribosome"] >= 0.6
    # Without labels, the noise threshold still keeps the large, distinct VLPs.
    blind = evaluate(result.peaks.at(result.noise_thresholds), picks, classes)
    assert blind.per_class.set_index("particle_type").loc["virus-like-particle",
                                                          "recall_0.5"] >= 0.8

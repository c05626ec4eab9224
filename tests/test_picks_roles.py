"""Opened picks files: the role inferred from them; tomograms placed side by side."""

import numpy as np
import pytest

from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.layers import (
    PICKS,
    PREDICTED,
    REFERENCE,
    infer_role,
    picks_layer_name,
    place_beside,
)

ZYX = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])


@pytest.mark.parametrize("scores, path, role", [
    (None, "run/picks.csv", PICKS),
    ([1.0, 1.0], "annotations/TS_01_ribosome.coords", PICKS),  # hand picks score 1
    ([0.31, 0.92], "out/preds.csv", PREDICTED),
    ([0.31, 0.92], "ground_truth/picks.csv", PREDICTED),  # scores win: a picker's output
    (None, "ground_truth/picks.csv", REFERENCE),
    (None, "data/TS_01_reference.star", REFERENCE),
    ([1.0, 1.0], "data/gt.csv", REFERENCE),
    (None, "data/gtpicks.csv", PICKS),  # a word, not a substring
])
def test_role_of_an_opened_picks_file(scores, path, role):
    picks = picks_from_positions(ZYX, "TS_01", "ribosome",
                                 None if scores is None else np.asarray(scores))
    assert infer_role(picks, path) == role


def test_layer_names_tell_tomograms_apart():
    assert picks_layer_name("ribosome", PICKS) == "ribosome picks"
    assert picks_layer_name("ribosome", PREDICTED, "TS_02") == "ribosome predicted [TS_02]"


def test_a_tomogram_over_another_is_placed_beside_it():
    first = ((0.0, 0.0, 0.0), (640.0, 1600.0, 1600.0))
    assert place_beside((0.0, 0.0, 5000.0), (640.0, 800.0, 800.0), [first]) is None
    moved = place_beside((0.0, 0.0, 0.0), (640.0, 800.0, 800.0), [first])
    np.testing.assert_allclose(moved, [0.0, 0.0, 1600.0 + 80.0])
    second = (moved, (640.0, 800.0, 800.0))
    third = place_beside((0.0, 0.0, 0.0), (640.0, 800.0, 800.0), [first, second])
    assert third[2] >= moved[2] + 800.0

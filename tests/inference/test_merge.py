"""Merging picks tables: no duplicates, and no hand pick lost from an autosave."""

import numpy as np
import pandas as pd

from napari_semietpicker.inference.merge import autosave_table, picks_not_near
from napari_semietpicker.io.picks import picks_from_positions


def picks(zyx, name="ribosome", tomogram="TS_01"):
    return picks_from_positions(np.asarray(zyx, dtype=float).reshape(-1, 3), tomogram, name)


def test_picks_not_near_compares_within_one_class_and_tomogram():
    existing = pd.concat([picks([[0, 0, 0]]), picks([[100, 0, 0]], "apo")], ignore_index=True)
    candidates = pd.concat([picks([[0.2, 0, 0], [50, 0, 0]]), picks([[0, 0, 0]], "apo"),
                            picks([[0, 0, 0]], tomogram="TS_02")], ignore_index=True)
    kept = picks_not_near(candidates, existing)
    assert list(zip(kept["experiment"], kept["particle_type"], kept["z"])) == [
        ("TS_01", "ribosome", 50.0), ("TS_01", "apo", 0.0), ("TS_02", "ribosome", 0.0)]
    per_class = picks_not_near(candidates, existing, {"ribosome": 60.0, "apo": 1.0})
    assert list(per_class["z"]) == [0.0, 0.0]  # the 50 A one is now a duplicate


def test_autosave_keeps_hand_picks_a_prediction_layer_never_showed():
    """Session 1 autosaved 5 ribosomes; session 2 makes a ribosome picks layer from
    predictions (2 points, one on a hand pick) without restoring the autosave."""
    hand = np.array([[10, 10, 10], [20, 20, 20], [30, 30, 30], [40, 40, 40], [50, 50, 50]])
    earlier = picks(hand)
    on_screen = picks([[10, 10, 10.1], [90, 90, 90]])
    saved = autosave_table(on_screen, {"ribosome"}, previous=earlier, unseen=earlier)
    assert len(saved) == 6  # 2 on screen + 4 hand picks not on screen
    again = autosave_table(on_screen, {"ribosome"}, previous=saved, unseen=earlier)
    assert len(again) == 6  # saving again adds nothing twice
    # Once shown (restored into layers), the layers rule: a deleted pick is gone.
    shown = autosave_table(on_screen, {"ribosome"}, previous=saved, unseen=None)
    assert len(shown) == 2


def test_autosave_keeps_classes_without_a_layer():
    previous = pd.concat([picks([[1, 2, 3]], "apo"), picks([[4, 5, 6]])], ignore_index=True)
    saved = autosave_table(picks([[7, 8, 9]]), {"ribosome"}, previous, unseen=None)
    assert sorted(saved["particle_type"]) == ["apo", "ribosome"]
    assert list(saved.loc[saved["particle_type"] == "ribosome", "z"]) == [7.0]

"""The review dock end to end: queue, keys in the viewer, autosave, decisions as labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Points
from napari.utils.key_bindings import coerce_keybinding
from pytestqt.qtbot import QtBot
from qtpy.QtCore import Qt
from test_prediction_dock import model_dir, predicted  # noqa: F401 (fixtures)

from napari_semietpicker._qt._layer_tools import layer_meta, layer_picks, role_layers
from napari_semietpicker._qt.review import KEYS, ReviewWidget
from napari_semietpicker.inference.review import load_decisions
from napari_semietpicker.layers import PICKS
from napari_semietpicker.training.data import prepare_volume


def press(viewer, key: int, modifier=Qt.NoModifier) -> None:
    """A key press in the viewer's canvas, as a user gives it."""
    qt_viewer = viewer.window._qt_viewer
    qt_viewer.canvas.native.setFocus()
    QtBot.keyClick(qt_viewer, key, modifier)


def centred_on(viewer, world) -> bool:
    return np.allclose(viewer.dims.point[0], world[0], atol=10.1) and \
        np.allclose(viewer.scene.camera.center[-2:], world[1:], atol=1e-3)


@pytest.fixture
def panel(predicted, blob_viewer, qtbot, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("SEMIETPICKER_AUTOSAVE_DIR", str(tmp_path / "auto"))
    dock, _ = predicted
    widget = ReviewWidget(blob_viewer)
    blob_viewer.window.add_dock_widget(widget, name="Review queue")
    widget.build_button.click()
    return dock, widget


def world_of(widget, index):
    item = widget.review.item(index)
    return item[["z", "y", "x"]].to_numpy(float) + widget.prediction.origin


def test_review_panel_keys_autosave_and_labels(panel, blob_viewer, qtbot, blob_set):
    dock, widget = panel
    n = len(widget.review.queue)
    assert n > 4 and widget.table.rowCount() == n
    assert widget.progress_label.text() == f"0 of {n} reviewed"
    priorities = widget.review.queue["priority"].to_numpy()
    assert np.all(np.diff(priorities) <= 1e-12)  # most uncertain first
    assert widget.table.item(0, 4).text() == widget.review.queue["reason"].iloc[0]
    assert widget.index == 0 and centred_on(blob_viewer, world_of(widget, 0))

    press(blob_viewer, Qt.Key_K)  # accept item 0, go on to item 1
    assert widget.review.decisions[0].action == "accept" and widget.index == 1
    assert centred_on(blob_viewer, world_of(widget, 1))
    press(blob_viewer, Qt.Key_J)  # reject item 1
    assert widget.review.decisions[1].action == "reject"
    press(blob_viewer, Qt.Key_H)  # item 2 becomes the other class
    own = widget.review.item(2)["particle_type"]
    assert widget.review.decisions[2].particle_type == ({"big", "small"} - {own}).pop()
    target = world_of(widget, 3) + np.array([0.0, 30.0, -20.0])
    blob_viewer.cursor.position = tuple(target)
    press(blob_viewer, Qt.Key_G)  # item 3's centre is at the cursor
    np.testing.assert_allclose(widget.review.decisions[3].zyx,
                               target - widget.prediction.origin)
    press(blob_viewer, Qt.Key_N, Qt.ShiftModifier)  # back to item 3
    assert widget.index == 3 and centred_on(blob_viewer, world_of(widget, 3))
    press(blob_viewer, Qt.Key_N)
    assert widget.index == 4
    assert widget.progress_label.text() == f"4 of {n} reviewed"
    assert widget.table.item(2, 3).text().startswith("change-class to ")

    # Every decision is on disk already: a new panel (after a kill) restores all four.
    saved = load_decisions(widget.path)
    assert saved["action"].tolist() == ["accept", "reject", "change-class", "move"]
    widget.close()  # unbinds its keys
    assert not any(coerce_keybinding(key) in blob_viewer.keymap for key in KEYS.values())
    again = ReviewWidget(blob_viewer)
    assert all(coerce_keybinding(key) in blob_viewer.keymap for key in KEYS.values())
    again.build_button.click()
    assert again.progress_label.text() == f"4 of {n} reviewed" and again.index == 4
    again.close()

    positives, negatives = widget.use_as_labels()
    assert negatives == 1 and positives > 0
    negative_layers = [la for la in role_layers(blob_viewer, "blob_2", PICKS)
                       if layer_meta(la).get("negatives")]
    assert len(negative_layers) == 1 and negative_layers[0].name.endswith(" negatives")
    table = layer_picks(negative_layers[0], widget.prediction.origin, "blob_2")
    assert table["role"].tolist() == ["negative"]
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy()[0],
                               world_of(widget, 1) - widget.prediction.origin, atol=1e-3)
    # The training dock reads picks layers as tables: the negative reaches the sampler.
    picks = [layer_picks(la, widget.prediction.origin, "blob_2")
             for la in role_layers(blob_viewer, "blob_2", PICKS)]
    volume = prepare_volume(blob_set["tomograms"][2], pd.concat(picks), blob_set["classes"])
    assert len(volume.negatives) == 1

    assert not any(coerce_keybinding(key) in blob_viewer.keymap for key in KEYS.values())
    index = widget.index
    press(blob_viewer, Qt.Key_N)
    assert widget.index == index
    assert isinstance(blob_viewer.layers["review item"], Points)

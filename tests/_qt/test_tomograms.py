"""Opened picks files in the classes dock: their role, several tomograms in one viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_semietpicker._qt._layer_tools import (
    HEATMAP,
    is_picks,
    role_layers,
    show_heatmap,
    world_points,
)
from napari_semietpicker._qt.annotation import AnnotationWidget
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.geometry import Grid
from napari_semietpicker.io.picks import picks_from_positions, write_picks_csv
from napari_semietpicker.io.tomogram import write_tomogram
from napari_semietpicker.layers import META, PICKS, PREDICTED
from napari_semietpicker.model.checkpoint import ModelCard
from napari_semietpicker.model.network import ModelConfig

VOXEL = 10.0
SHAPE = (16, 40, 48)  # z, y, x
ZYX = {"TS_01": np.array([[50.0, 100.0, 150.0], [80.0, 200.0, 300.0]]),
       "TS_02": np.array([[60.0, 110.0, 160.0]])}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """TS_01.mrc, TS_02.mrc and one CZII CSV holding the picks of both."""
    for i, name in enumerate(ZYX):
        write_tomogram(tmp_path / f"{name}.mrc", np.full(SHAPE, i, np.float32), VOXEL)
    table = pd.concat([picks_from_positions(zyx, name, "ribosome") for name, zyx in ZYX.items()],
                      ignore_index=True)
    write_picks_csv(table, tmp_path / "all_picks.csv")
    return tmp_path


def points(viewer) -> list:
    return [layer for layer in viewer.layers if layer._type_string == "points"]


def test_a_csv_of_two_tomograms_shows_the_open_ones_picks_and_keeps_tomograms_apart(
        make_napari_viewer, folder: Path) -> None:
    viewer = make_napari_viewer()
    widget = AnnotationWidget(viewer)
    viewer.open(str(folder / "TS_01.mrc"), plugin="napari-semietpicker")
    viewer.open(str(folder / "all_picks.csv"), plugin="napari-semietpicker")
    by_tomogram = {layer.metadata[META]["tomogram"]: layer for layer in points(viewer)}
    assert by_tomogram["TS_01"].visible and not by_tomogram["TS_02"].visible
    assert by_tomogram["TS_01"].name != by_tomogram["TS_02"].name
    assert by_tomogram["TS_02"].name.endswith("[TS_02]")

    viewer.open(str(folder / "TS_02.mrc"), plugin="napari-semietpicker")
    first, second = viewer.layers["TS_01"], viewer.layers["TS_02"]
    assert by_tomogram["TS_02"].visible  # its tomogram is open now
    # side by side, not over each other: TS_02 starts beyond TS_01's x extent
    assert second.translate[2] >= first.translate[2] + SHAPE[2] * VOXEL
    for name, image in (("TS_01", first), ("TS_02", second)):
        layer = by_tomogram[name]
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        # each pick stays where it is in its own tomogram
        np.testing.assert_allclose(world_points(layer) - np.asarray(image.translate),
                                   ZYX[name], atol=1e-6)
    assert len({layer.name for layer in points(viewer)}) == 2
    assert "beside" in widget.status.text()


def test_a_predictions_file_opens_as_predictions_and_the_dock_makes_it_labels(
        make_napari_viewer, folder: Path) -> None:
    predictions = picks_from_positions(ZYX["TS_01"], "TS_01", "ribosome", np.array([0.4, 0.9]))
    write_picks_csv(predictions, folder / "TS_01_preds.csv")
    viewer = make_napari_viewer()
    widget = AnnotationWidget(viewer)
    viewer.open(str(folder / "TS_01.mrc"), plugin="napari-semietpicker")
    [layer] = viewer.open(str(folder / "TS_01_preds.csv"), plugin="napari-semietpicker")
    assert layer.metadata[META]["role"] == PREDICTED and not is_picks(layer)
    assert list(layer.text.values) == ["0.40", "0.90"]
    # not the prediction dock's own predictions: it neither overwrites nor exports them
    assert role_layers(viewer, "TS_01", PREDICTED) == []

    viewer.layers.selection.active = layer
    assert widget.role_row.combo.isEnabled()
    assert widget.role_row.combo.currentText().startswith("predictions")
    widget.role_row.choose(PICKS)
    assert is_picks(layer) and layer.name == "ribosome picks"
    assert widget.counts()["ribosome"] == 2  # counted (and trained on) as labels
    layer.add(np.array([[5.0, 5.0, 5.0]]))
    widget.save_now()
    from napari_semietpicker.io.autosave import autosave_path, load_autosave

    saved = load_autosave(autosave_path(folder / "TS_01.mrc"))
    assert saved is not None and len(saved) == 3


def test_heatmap_layers_are_named_by_tomogram_once_several_are_open(
        make_napari_viewer, folder: Path) -> None:
    viewer = make_napari_viewer()
    AnnotationWidget(viewer)
    viewer.open(str(folder / "TS_01.mrc"), plugin="napari-semietpicker")
    card = ModelCard([ParticleClass("ribosome", 150.0)], VOXEL, ModelConfig(1, "tiny"))
    heat = np.zeros((8, 20, 24), np.float32)

    def show(tomogram: str) -> None:
        show_heatmap(viewer, card, 0, tomogram, np.zeros(3), heat, Grid(2 * VOXEL))

    show("TS_01")
    assert viewer.layers[-1].name == "ribosome heatmap"  # one tomogram: no suffix
    viewer.open(str(folder / "TS_02.mrc"), plugin="napari-semietpicker")
    show("TS_02")
    names = {layer.metadata[META]["tomogram"]: layer.name for layer in viewer.layers
             if layer.metadata.get(META, {}).get("role") == HEATMAP}
    assert names == {"TS_01": "ribosome heatmap [TS_01]", "TS_02": "ribosome heatmap [TS_02]"}
    n_layers = len(viewer.layers)
    show("TS_01")  # a new prediction updates its tomogram's layer in place
    assert len(viewer.layers) == n_layers

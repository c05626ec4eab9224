"""The annotation dock in a real napari viewer (Qt, under Xvfb through pytest-xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog

from napari_semietpicker._qt.annotation import AnnotationWidget
from napari_semietpicker.classes import CLASS_PRESETS
from napari_semietpicker.io.autosave import autosave_path, load_autosave
from napari_semietpicker.io.picks import picks_from_positions, write_picks_csv
from napari_semietpicker.io.tomogram import write_tomogram
from napari_semietpicker.layers import META, PICKS

VOXEL = 13.48
SHAPE = (24, 40, 32)
CZII = [c.name for c in CLASS_PRESETS["czii"]]


@pytest.fixture(autouse=True)
def autosave_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "autosave"
    monkeypatch.setenv("SEMIETPICKER_AUTOSAVE_DIR", str(folder))
    return folder


@pytest.fixture
def mrc_path(tmp_path: Path) -> Path:
    data = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    path = tmp_path / "TS_01.mrc"
    write_tomogram(path, data, VOXEL)
    return path


def open_with_dock(make_napari_viewer, path: Path, **kwargs) -> tuple:
    viewer = make_napari_viewer(**kwargs)
    viewer.open(str(path), plugin="napari-semietpicker")
    widget = AnnotationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classes and annotation")
    return viewer, widget


def test_make_layers_count_and_autosave(make_napari_viewer, qtbot, mrc_path: Path) -> None:
    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    assert widget.tomogram_combo.currentText() == "TS_01"
    assert widget.state.tomogram == "TS_01"
    layers = widget.make_picks_layers()
    assert [layer.name for layer in layers] == [f"{name} picks" for name in CZII]
    ribosome = layers[CZII.index("ribosome")]
    # the layer shares the tomogram's scale: sizes and data are in voxels
    assert tuple(ribosome.scale) == pytest.approx((VOXEL,) * 3)
    assert ribosome.current_size == pytest.approx(300.0 / VOXEL)
    assert ribosome.projection_mode == "rescale_spherical"
    assert viewer.dims.margin_left[0] == viewer.dims.margin_right[0] == 150.0  # largest radius
    assert ribosome.metadata[META]["voxel_size"] == pytest.approx(VOXEL)
    assert viewer.layers.selection.active is layers[0] and layers[0].mode == "add"
    assert widget.make_picks_layers() == []  # a second click does not duplicate layers

    ribosome.add(np.array([[100.0, 200.0, 150.0]]) / VOXEL)
    layers[0].add(np.array([[13.48, 26.96, 40.44], [50.0, 60.0, 70.0]]) / VOXEL)
    assert widget.counts()["ribosome"] == 1 and widget.counts()["apo-ferritin"] == 2
    assert widget.table.item(CZII.index("ribosome"), 4).text() == "1"
    assert widget.table.item(0, 4).text() == "2"

    path = autosave_path(mrc_path)
    qtbot.waitUntil(lambda: path.exists(), timeout=5000)
    saved = load_autosave(path)
    assert sorted(saved["particle_type"]) == ["apo-ferritin", "apo-ferritin", "ribosome"]
    assert set(saved["experiment"]) == {"TS_01"} and set(saved["score"]) == {1.0}
    row = saved[saved["particle_type"] == "ribosome"].iloc[0]
    assert (row["x"], row["y"], row["z"]) == pytest.approx((150.0, 200.0, 100.0))


def test_new_viewer_restores_autosaved_picks(make_napari_viewer, mrc_path: Path) -> None:
    saved = picks_from_positions(np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0],
                                           [70.0, 80.0, 90.0]]),
                                 "TS_01", ["ribosome", "ribosome", "mystery"])
    write_picks_csv(saved, autosave_path(mrc_path))
    _, widget = open_with_dock(make_napari_viewer, mrc_path)
    layers = {layer.metadata[META]["class"]: layer for layer in widget.make_picks_layers()}
    np.testing.assert_allclose(layers["ribosome"].data * VOXEL, [[10, 20, 30], [40, 50, 60]])
    np.testing.assert_allclose(layers["mystery"].data * VOXEL, [[70, 80, 90]])
    assert widget.classes[-1].name == "mystery"  # restored picks always get a class
    assert "Restored 3 picks" in widget.status.text()
    assert widget.counts()["ribosome"] == 2


def test_every_edit_is_in_the_autosave_at_once(make_napari_viewer, mrc_path: Path) -> None:
    """A kill right after a click loses nothing: each finished edit is written before the
    event loop runs again (no debounce)."""
    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    layers = widget.make_picks_layers()
    path = autosave_path(mrc_path)
    layers[1].add(np.array([[1.0, 2.0, 3.0]]))
    assert list(load_autosave(path)["particle_type"]) == [CZII[1]]
    layers[1].data = np.array([[4.0, 5.0, 6.0]])  # a move
    row = load_autosave(path).iloc[0]
    assert (row["z"], row["y"], row["x"]) == pytest.approx((4 * VOXEL, 5 * VOXEL, 6 * VOXEL))
    layers[1].selected_data = {0}
    layers[1].remove_selected()
    assert load_autosave(path).empty


def test_a_failed_save_is_retried_when_the_viewer_closes(make_napari_viewer, mrc_path: Path,
                                                         monkeypatch) -> None:
    from napari_semietpicker.io import autosave

    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    layers = widget.make_picks_layers()
    real = autosave.save_autosave
    monkeypatch.setattr(autosave, "save_autosave", lambda *a, **k: (_ for _ in ()).throw(
        OSError("disk full")))
    layers[1].add(np.array([[1.0, 2.0, 3.0]]))
    assert "disk full" in widget.status.text() and widget.autosaver.dirty == {"TS_01"}
    monkeypatch.setattr(autosave, "save_autosave", real)
    viewer.close()  # the dock sees its window close (public Qt events) and saves
    assert list(load_autosave(autosave_path(mrc_path))["particle_type"]) == [CZII[1]]


def test_docks_use_no_private_napari_window() -> None:
    """``Window._qt_window`` is private napari API that napari warns will go."""
    import napari_semietpicker._qt as qt_package

    folder = Path(qt_package.__file__).parent
    users = [p.name for p in folder.glob("*.py") if "_qt_window" in p.read_text()]
    assert users == []


def test_make_picks_layers_merges_the_autosave_into_layers_from_a_file(
        make_napari_viewer, mrc_path: Path, tmp_path: Path) -> None:
    """Session 1 clicked 5 ribosomes; session 2 opens the tomogram and a picks CSV with one
    ribosome, presses Make picks layers and clicks one apo-ferritin: no ribosome is lost."""
    rng = np.random.default_rng(0)
    clicked = rng.uniform(20, 300, (5, 3))
    write_picks_csv(picks_from_positions(clicked, "TS_01", "ribosome"), autosave_path(mrc_path))
    from_file = tmp_path / "TS_01_picks.csv"
    write_picks_csv(picks_from_positions(np.array([[100.0, 100.0, 100.0]]), "TS_01",
                                         "ribosome"), from_file)
    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    viewer.open(str(from_file), plugin="napari-semietpicker")
    made = widget.make_picks_layers()
    assert "1 class(es) already had one" in widget.status.text()
    ribosome = next(la for la in viewer.layers if la.metadata[META].get("class") == "ribosome"
                    and la.metadata[META].get("role") == PICKS)
    assert len(ribosome.data) == 6  # the file's pick and the 5 autosaved ones
    made[0].add(np.array([[2.0, 3.0, 4.0]]))  # apo-ferritin
    saved = load_autosave(autosave_path(mrc_path))
    assert (saved["particle_type"] == "ribosome").sum() == 6
    widget.make_picks_layers()  # pressing it again adds nothing twice
    assert len(ribosome.data) == 6


def test_removed_layer_keeps_its_autosaved_picks(make_napari_viewer, mrc_path: Path) -> None:
    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    layers = widget.make_picks_layers()
    layers[2].add(np.array([[1.0, 2.0, 3.0]]))
    viewer.layers.remove(layers[2])  # saves first
    layers[0].add(np.array([[4.0, 5.0, 6.0]]))
    widget.save_now()
    saved = load_autosave(autosave_path(mrc_path))
    assert sorted(saved["particle_type"]) == sorted([CZII[0], CZII[2]])


def test_editing_classes_updates_state_and_layers(make_napari_viewer, mrc_path: Path,
                                                  monkeypatch) -> None:
    _, widget = open_with_dock(make_napari_viewer, mrc_path)
    emitted = []
    widget.classes_changed.connect(emitted.append)
    layers = widget.make_picks_layers()
    layers[0].add(np.array([[1.0, 2.0, 3.0]]))

    widget.table.item(0, 1).setText("77")  # radius of apo-ferritin
    assert widget.classes[0].radius_A == 77.0 and emitted[-1][0].radius_A == 77.0
    assert layers[0].current_size == pytest.approx(154.0 / VOXEL)
    assert np.allclose(layers[0].size, 154.0 / VOXEL)
    assert widget.preset_combo.currentText() == "custom"

    widget.table.item(0, 0).setText("ferritin")
    assert layers[0].metadata[META]["class"] == "ferritin"
    assert layers[0].name == "ferritin picks" and widget.counts()["ferritin"] == 1

    widget.table.item(0, 1).setText("big")
    assert "Not changed" in widget.status.text()
    assert widget.table.item(0, 1).text() == "77" and widget.classes[0].radius_A == 77.0
    widget.table.item(1, 0).setText("ribosome")  # duplicate name
    assert "duplicate" in widget.status.text() and widget.classes[1].name == CZII[1]

    # The colour cell opens a colour dialog on double-click (typing is off there).
    assert not widget.table.item(0, 3).flags() & Qt.ItemIsEditable
    answers = [QColor("#123456"), QColor()]  # chosen, then cancelled (invalid)
    monkeypatch.setattr(QColorDialog, "getColor", lambda *args: answers.pop(0))
    widget.table.cellDoubleClicked.emit(0, 3)
    assert widget.classes[0].color == "#123456" and emitted[-1][0].color == "#123456"
    assert layers[0].metadata[META]["color"] == "#123456"
    widget.table.cellDoubleClicked.emit(0, 3)
    assert widget.classes[0].color == "#123456"

    widget.set_preset("czii")
    assert widget.classes == list(CLASS_PRESETS["czii"])


def test_classes_from_file_and_table(make_napari_viewer, tmp_path: Path,
                                     mrc_path: Path) -> None:
    _, widget = open_with_dock(make_napari_viewer, mrc_path)
    good = tmp_path / "classes.yaml"
    good.write_text("classes:\n  - {name: proteasome, radius_A: 85, color: '#00ff00'}\n")
    assert widget.load_classes_file(good)
    assert [c.name for c in widget.classes] == ["proteasome"]
    assert widget.table.rowCount() == 1 and widget.table.item(0, 3).text() == "#00ff00"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x}\n")
    assert not widget.load_classes_file(bad)
    assert "radius_A" in widget.status.text() and widget.classes[0].name == "proteasome"

    widget._add_class()
    assert widget.classes[1].name == "class_1" and widget.classes[1].color != "#00ff00"
    [layer] = [la for la in widget.make_picks_layers() if la.metadata[META]["class"] == "class_1"]
    assert layer.metadata[META]["role"] == PICKS


def test_dock_from_the_manifest_reports_a_missing_tomogram(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-semietpicker",
                                                     "Classes and annotation")
    assert isinstance(widget, AnnotationWidget)
    assert widget.make_picks_layers() == []
    assert "Open a tomogram" in widget.status.text()


def test_sample_data_renders_and_is_annotated_by_name(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-semietpicker", "simulated")
    widget = AnnotationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.tomogram_combo.currentText() == "sim_sample"
    layers = widget.make_picks_layers()
    layers[0].add(np.array([[30.0, 80.0, 80.0]]))  # voxels of the 10 A sample
    widget.save_now()
    assert len(load_autosave(autosave_path("sim_sample"))) == 1
    # drawn by a real OpenGL canvas (Xvfb): the image is not blank
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.shape[-1] == 4 and shot[..., :3].std() > 5


def test_unreadable_autosave_is_set_aside_not_overwritten(make_napari_viewer,
                                                          mrc_path: Path) -> None:
    path = autosave_path(mrc_path)
    path.parent.mkdir(parents=True)
    path.write_text("experiment,particle_type,x,y,z\nTS_01,ribosome,1,2,not-a-number\n")
    _, widget = open_with_dock(make_napari_viewer, mrc_path)
    layers = widget.make_picks_layers()
    assert "could not be read" in widget.status.text()
    kept = path.with_name(path.name + ".unreadable")
    assert "not-a-number" in kept.read_text()
    layers[0].add(np.array([[1.0, 2.0, 3.0]]))
    widget.save_now()
    assert len(load_autosave(path)) == 1 and "not-a-number" in kept.read_text()


def test_picks_layers_share_the_tomogram_frame_so_z_steps_one_slice(
        make_napari_viewer, mrc_path: Path, tmp_path: Path) -> None:
    """A picks file opened without its tomogram beside it comes in Angstrom (scale 1); with
    the dock open it takes the tomogram's scale, and napari's z slider keeps one step per
    slice (it had 1 A steps: 300+ steps for 24 slices)."""
    elsewhere = tmp_path / "picks"
    elsewhere.mkdir()
    csv = elsewhere / "picks.csv"
    world = np.array([[100.0, 200.0, 150.0], [50.0, 60.0, 70.0]])
    write_picks_csv(picks_from_positions(world, "TS_01", "ribosome"), csv)
    viewer, widget = open_with_dock(make_napari_viewer, mrc_path)
    viewer.open(str(csv), plugin="napari-semietpicker")
    made = widget.make_picks_layers()
    image = viewer.layers["TS_01"]
    points = [la for la in viewer.layers if la._type_string == "points"]
    assert len(points) == len(made) + 1
    for layer in points:
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    from_file = next(la for la in points if la not in made)
    np.testing.assert_allclose(from_file.data * from_file.scale, world, atol=1e-3)  # unmoved
    assert from_file.size[0] == pytest.approx(300.0 / VOXEL)  # still the particle diameter
    z = viewer.dims.range[0]
    assert z.step == pytest.approx(VOXEL, rel=1e-5)
    assert viewer.dims.nsteps[0] == SHAPE[0]

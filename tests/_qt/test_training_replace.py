"""The training dock asks before a new training replaces the model in its folder."""

from __future__ import annotations

from qtpy.QtWidgets import QMessageBox
from test_training_dock import make_dock

from napari_semietpicker.model.checkpoint import CONFIG


def test_the_dock_asks_before_replacing_a_model(blob_viewer, qtbot, tmp_path, monkeypatch):
    dock = make_dock(blob_viewer, tmp_path / "model", burn_in=1)
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *args, **kwargs: asked.append(args) or QMessageBox.No)
    assert dock.start()  # an empty folder: nothing to ask
    qtbot.waitUntil(lambda: not dock.running, timeout=60_000)
    assert not asked
    config = (tmp_path / "model" / CONFIG).read_bytes()
    written = (tmp_path / "model" / CONFIG).stat().st_ino

    assert not dock.start()  # answered No: nothing starts, the model stays
    assert len(asked) == 1 and "already holds a trained model" in asked[0][2]
    assert "Kept the model" in dock.status.text()
    assert (tmp_path / "model" / CONFIG).read_bytes() == config

    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.Yes)
    assert dock.start()  # answered Yes: it trains again into the folder
    qtbot.waitUntil(lambda: not dock.running, timeout=60_000)
    assert (tmp_path / "model" / CONFIG).stat().st_ino != written  # a new model was saved

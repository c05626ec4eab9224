"""The README's first command with a display: napari with the sample data and the docks."""

from napari_semietpicker._qt.annotation import AnnotationWidget
from napari_semietpicker._qt.launch import populate_viewer
from napari_semietpicker._qt.prediction import PredictionWidget
from napari_semietpicker._qt.training import TrainingWidget


def test_demo_opens_the_sample_and_all_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets = populate_viewer(viewer)
    assert [type(w) for w in widgets] == [AnnotationWidget, TrainingWidget, PredictionWidget]
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    assert len(images) == 1 and images[0].scale[0] > 1  # Angstrom world units
    references = [layer for layer in viewer.layers if layer.name.endswith("reference")]
    assert len(references) == 6 and sum(len(layer.data) for layer in references) > 0


def test_demo_layout_fits_a_laptop_screen(make_napari_viewer):
    """At 1366x768 every dock is a tab that scrolls its content; the class table shows all
    six CZII classes (it showed one of six in a stacked layout)."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer(show=True)
    widgets = populate_viewer(viewer)
    viewer.window.resize(1366, 768)
    for _ in range(10):
        QApplication.processEvents()
    annotation = widgets[0]
    table = annotation.table
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    assert table.rowCount() == 6 and table.viewport().height() >= rows
    for widget in widgets:
        scroll = widget.findChild(QScrollArea)
        assert scroll is not None and scroll.widgetResizable()
        assert widget.minimumSizeHint().height() < 300  # the dock can shrink: it scrolls
    assert viewer.window.geometry()[2:] == (1366, 768)

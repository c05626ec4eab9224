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

"""Fixtures for the dock tests: a napari viewer holding the blob tomograms and their picks."""

from __future__ import annotations

import pytest

from napari_semietpicker.layers import PICKS, REFERENCE, image_layer, picks_layers


def add_layer_tuples(viewer, tuples: list[tuple]) -> list:
    """Add LayerDataTuples (as the reader returns them) to a viewer."""
    from napari.layers import Layer

    return [viewer.add_layer(Layer.create(*item)) for item in tuples]


@pytest.fixture
def blob_viewer(make_napari_viewer, blob_set):
    """blob_0 and blob_1 annotated (role picks), blob_2 with reference picks only."""
    viewer = make_napari_viewer()
    classes = blob_set["classes"]
    for i, tomogram in enumerate(blob_set["tomograms"]):
        role = PICKS if i < 2 else REFERENCE
        add_layer_tuples(viewer, [image_layer(tomogram),
                                  *picks_layers(blob_set["picks"], classes, tomogram.name, role)])
    return viewer

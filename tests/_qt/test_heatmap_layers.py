"""Heatmap layers lie where their grid says, also for a model trained on binned tomograms."""

import numpy as np
import pytest
from test_geometry import STRIDE, PoolNet, _blob_volume, card_for

from napari_semietpicker._qt._layer_tools import show_heatmap
from napari_semietpicker.inference.predict import PredictConfig, pick_tomogram
from napari_semietpicker.io.tomogram import Tomogram


def test_heatmap_layer_of_a_binned_model_is_centred_on_its_voxels(make_napari_viewer):
    voxel, factor = 10.0, 2
    truth = np.array([[250.0, 330.0, 410.0]])
    sigma = 1.5 * STRIDE * factor * voxel
    tomogram = Tomogram(_blob_volume((64, 72, 80), voxel, truth, sigma, 2.0, factor), voxel, "t")
    card = card_for(factor * voxel, 4 * sigma)
    peaks, heat = pick_tomogram(PoolNet(), card, tomogram, PredictConfig(window=64))
    viewer = make_napari_viewer()
    origin = np.array([100.0, -50.0, 7.0])
    show_heatmap(viewer, card, 0, "t", origin, heat[0].numpy(), peaks.heatmap_grid)
    layer = viewer.layers[-1]
    # output voxel 0 = binned voxels 0-1 = full voxels 0-3: centred at full index 1.5
    assert tuple(layer.scale) == pytest.approx((40.0,) * 3)
    assert tuple(layer.translate) == pytest.approx(tuple(origin + 15.0))
    brightest = np.unravel_index(int(np.argmax(layer.data)), layer.data.shape)
    world = np.asarray(layer.data_to_world(brightest))
    assert np.all(np.abs(world - origin - truth[0]) <= 0.5 * 40.0)

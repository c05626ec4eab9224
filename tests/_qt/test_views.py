"""What the viewer shows: heatmaps that do not sum to white, shaded 3D picks, scores."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from napari_semietpicker._qt._layer_tools import add_points_layer, show_heatmap
from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.geometry import Grid
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.layers import PICKS, PREDICTED, heatmap_colormap

RGB = (ParticleClass("red", 50.0, 1.0, "#ff0000"), ParticleClass("green", 50.0, 1.0, "#00ff00"),
       ParticleClass("blue", 50.0, 1.0, "#0000ff"))


def test_heatmap_colormap_is_transparent_at_zero_and_never_brighter_than_its_class():
    points = heatmap_colormap((1.0, 0.5, 0.0))
    assert points[0, 3] == 0.0 and 0 < points[-1, 3] < 1
    np.testing.assert_allclose(points[:, :3].max(axis=0), [1.0, 0.5, 0.0])


def test_overlapping_heatmaps_of_three_classes_do_not_sum_to_white(make_napari_viewer):
    """Red, green and blue heatmaps, all certain in the same voxels, drawn by a real canvas
    (Xvfb): with additive blending they summed to white."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((8, 32, 32), np.float32), contrast_limits=(0, 1))
    card = SimpleNamespace(classes=list(RGB))
    heat = np.ones((8, 32, 32), np.float32)
    for index in range(3):
        show_heatmap(viewer, card, index, "t", np.zeros(3), heat, Grid(1.0))
    shot = viewer.screenshot(canvas_only=True, flash=False)
    centre = shot[shot.shape[0] // 2, shot.shape[1] // 2, :3].astype(int)
    assert centre.max() > 100  # the heatmaps are drawn
    assert centre.min() < 100, f"overlapping heatmaps sum to white: {centre}"


def test_picks_are_shaded_spheres_and_predicted_picks_show_their_score(make_napari_viewer):
    viewer = make_napari_viewer()
    table = picks_from_positions(np.array([[100.0, 100.0, 100.0], [200.0, 200.0, 200.0]]),
                                 "t", "red", np.array([0.42, 0.87]))
    predicted = add_points_layer(viewer, table, RGB[0], "t", PREDICTED)
    picks = add_points_layer(viewer, table, RGB[0], "t", PICKS)
    assert predicted.shading == "spherical" and picks.shading == "spherical"
    viewer.dims.ndisplay = 3  # the 3D view draws them
    assert list(predicted.text.values) == ["0.42", "0.87"]
    assert set(np.atleast_1d(picks.text.values)) <= {""}  # hand picks: no text
    predicted.features = pd.DataFrame({"score": [0.5, 0.25]})  # a new threshold, new picks
    assert list(predicted.text.values) == ["0.50", "0.25"]


def test_picks_are_filled_balls_in_3d_and_rings_in_2d(make_napari_viewer):
    from napari_semietpicker._qt.annotation import AnnotationWidget

    viewer = make_napari_viewer()
    table = picks_from_positions(np.array([[100.0, 100.0, 100.0]]), "t", "red")
    layer = add_points_layer(viewer, table, RGB[0], "t", PICKS)
    AnnotationWidget(viewer)
    assert layer.face_color[0, 3] == 0  # a ring around the particle in a 2D slice
    viewer.dims.ndisplay = 3
    np.testing.assert_allclose(layer.face_color[0], [1.0, 0.0, 0.0, 1.0])  # a shaded ball
    viewer.dims.ndisplay = 2
    assert layer.face_color[0, 3] == 0

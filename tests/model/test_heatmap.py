import numpy as np
import pytest
import torch

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.geometry import input_to_output, output_to_input
from napari_semietpicker.model.heatmap import (
    class_sigmas,
    find_peaks,
    nms_kernels,
    render_targets,
)


def test_coordinate_maps_are_inverse_and_centred():
    # Output voxel 0 at stride 2 covers input voxels 0 and 1: its centre is 0.5.
    assert output_to_input(np.array([0.0]), 2)[0] == 0.5
    p = np.array([0.0, 13.25, 99.0])
    np.testing.assert_allclose(output_to_input(input_to_output(p, 2), 2), p)


def test_sigma_is_half_radius_and_kernels_odd():
    classes = [ParticleClass("a", 60.0), ParticleClass("b", 150.0), ParticleClass("c", 10.0)]
    np.testing.assert_allclose(class_sigmas(classes, 10.0, 2), [1.5, 3.75, 0.25])
    kernels = nms_kernels(classes, 10.0, 2)
    assert kernels == [5, 9, 3]  # reach half a radius: 30 A -> 1.5 -> 2 voxels of 20 A
    assert all(k % 2 == 1 and k >= 3 for k in kernels)
    # a whole radius each way: 60 A -> 3 voxels, 150 A -> 7.5 -> 8 voxels
    assert nms_kernels(classes, 10.0, 2, reach=1.0) == [7, 17, 3]


def test_render_targets_peaks_at_centres_and_takes_max_on_overlap():
    centers = np.array([[5.0, 6.0, 7.0], [5.0, 6.0, 9.0]])
    heat = render_targets(centers, np.array([0, 0]), (12, 12, 12), np.array([1.5]))
    assert heat.shape == (1, 12, 12, 12)
    assert heat[0, 5, 6, 7] == pytest.approx(1.0)
    assert heat[0, 5, 6, 9] == pytest.approx(1.0)
    # Between the two: the max of the two tails, not their sum.
    assert heat[0, 5, 6, 8] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-5)
    assert heat.max() <= 1.0


def test_find_peaks_recovers_exact_fractional_centres():
    centers = np.array([[4.3, 10.0, 10.7], [12.0, 3.6, 18.2], [15.5, 15.5, 5.0]])
    heat = render_targets(centers, np.zeros(3, dtype=int), (20, 22, 24), np.array([1.5]))
    positions, scores = find_peaks(torch.from_numpy(heat[0]), kernel=3, floor=0.5)
    assert len(positions) == 3
    found = positions[np.lexsort(positions.T[::-1])]
    expected = centers[np.lexsort(centers.T[::-1])]
    np.testing.assert_allclose(found, expected, atol=0.12)
    assert np.all(scores > 0.7) and np.all(np.diff(scores) <= 0)


def test_find_peaks_floor_and_nms_kernel():
    heat = np.zeros((16, 16, 16), dtype=np.float32)
    heat[8, 8, 8] = 0.9
    heat[8, 8, 10] = 0.8  # within a 5-kernel of the stronger peak: suppressed
    heat[2, 2, 2] = 0.04  # under the floor
    positions, scores = find_peaks(torch.from_numpy(heat), kernel=5, floor=0.05)
    np.testing.assert_allclose(positions, [[8, 8, 8]])
    positions, _ = find_peaks(torch.from_numpy(heat), kernel=3, floor=0.05)
    assert len(positions) == 2

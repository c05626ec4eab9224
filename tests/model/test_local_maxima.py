"""The separable running max behind peak finding equals a true cube max-filter."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from napari_semietpicker.model import heatmap
from napari_semietpicker.model.heatmap import local_maxima, running_max


@pytest.mark.parametrize("shape", [(5, 7, 9), (20, 31, 17), (1, 4, 40)])
def test_running_max_is_the_cube_max_with_borders_seeing_only_inside(shape):
    heat = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    heat[heat > 0.8] = 0.8  # plateaus: ties must come out equal too
    for kernel in (1, 3, 5, 7, 9, 11, 17):
        expected = ndi.maximum_filter(heat.numpy(), size=kernel, mode="constant", cval=-np.inf)
        pooled = heat
        for dim in range(3):
            pooled = running_max(pooled, dim, kernel)
        np.testing.assert_array_equal(pooled.numpy(), expected)
        np.testing.assert_array_equal(local_maxima(heat, kernel).numpy(), heat.numpy() == expected)


@pytest.mark.parametrize("slab", [1, 3, 8, 64])
def test_local_maxima_slab_by_slab_equals_the_whole_volume_filter(monkeypatch, slab):
    heat = torch.rand((29, 12, 10), generator=torch.Generator().manual_seed(slab))
    heat[heat > 0.85] = 0.85
    monkeypatch.setattr(heatmap, "MAXIMA_SLAB", slab)
    for kernel in (3, 7, 13):
        expected = ndi.maximum_filter(heat.numpy(), size=kernel, mode="constant", cval=-np.inf)
        np.testing.assert_array_equal(local_maxima(heat, kernel).numpy(), heat.numpy() == expected)

"""napari sample data: a simulated tomogram with its reference picks."""

from __future__ import annotations

from typing import Any

from ._reader import add_tomogram_info
from .classes import load_classes
from .layers import REFERENCE, image_layer, picks_layers
from .simulate import simulate_tomogram

SAMPLE_SHAPE = (64, 160, 160)
SAMPLE_VOXEL_A = 10.0
SAMPLE_NAME = "sim_sample"
#: Twice the CZII number densities, so that every class appears in this small volume.
SAMPLE_DENSITY = 2.0
#: Less noisy than the simulator's default (0.05), so that particles can be picked by eye.
SAMPLE_SNR = 0.3


def sample_tomogram() -> list[tuple[Any, dict, str]]:
    """A 64 x 160 x 160 simulated tomogram (10 A voxels, seed 0, CZII classes) and its
    reference picks, one Points layer per class present (role ``reference``).

    The reference picks are the known answers, for evaluating picks made by hand or by a
    model; they are shown at half opacity so that the particles stay visible beneath. The
    contrast is set from percentiles (as for any opened tomogram), so that the noise extremes
    do not wash the image out.
    """
    classes = load_classes("czii")
    tomogram, picks = simulate_tomogram(shape=SAMPLE_SHAPE, voxel_size=SAMPLE_VOXEL_A,
                                        classes=classes, seed=0, density=SAMPLE_DENSITY,
                                        snr=SAMPLE_SNR, name=SAMPLE_NAME)
    references = picks_layers(picks, classes, tomogram.name, role=REFERENCE,
                              include_empty=False, voxel_size=tomogram.voxel_size)
    add_tomogram_info(references, tomogram)
    for _, attrs, _ in references:
        attrs["opacity"] = 0.5
    return [image_layer(tomogram), *references]

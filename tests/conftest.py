"""Shared fixtures: tiny synthetic volumes with known particle centres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.tomogram import Tomogram

torch.set_num_threads(2)

BLOB_CLASSES = [ParticleClass("big", 60.0, 1.0, "#ff0000"),
                ParticleClass("small", 40.0, 1.0, "#00ff00")]


def blob_tomogram(name: str, seed: int, shape=(64, 96, 96), voxel_size: float = 10.0,
                  n: int = 10, noise: float = 1.0) -> tuple[Tomogram, pd.DataFrame]:
    """Dark Gaussian blobs of two sizes in noise: an easy picking problem with answers."""
    rng = np.random.default_rng(seed)
    volume = rng.normal(0, noise, shape).astype(np.float32)
    grid = np.indices(shape, dtype=np.float32)
    tables = []
    placed: list[np.ndarray] = []
    while len(placed) < n:
        center = rng.uniform(8, np.array(shape) - 8)
        if any(np.linalg.norm(center - p) < 14 for p in placed):
            continue
        cls = BLOB_CLASSES[len(placed) % 2]
        sigma = cls.radius_A / voxel_size / 1.5
        r2 = sum((grid[a] - center[a]) ** 2 for a in range(3))
        volume -= 3 * np.exp(-r2 / (2 * sigma**2))
        placed.append(center)
        tables.append(picks_from_positions(center * voxel_size, name, cls.name))
    return Tomogram(volume, voxel_size, name), pd.concat(tables, ignore_index=True)


@pytest.fixture(scope="session")
def blob_set() -> dict:
    """Three blob tomograms (two to train, one to test) and all their picks."""
    tomograms, tables = [], []
    for i in range(3):
        tomogram, picks = blob_tomogram(f"blob_{i}", seed=i)
        tomograms.append(tomogram)
        tables.append(picks)
    return {"tomograms": tomograms, "picks": pd.concat(tables, ignore_index=True),
            "classes": BLOB_CLASSES}


@pytest.fixture(scope="session")
def blobs():
    """The blob classes and the blob tomogram maker, for tests that make their own."""
    return BLOB_CLASSES, blob_tomogram

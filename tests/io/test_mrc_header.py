"""MRC headers that trip tools up: permuted axes (mapc/mapr/maps), an origin, odd voxel sizes.

Each file is written with mrcfile the way another program would write it; reading must
give back the original (z, y, x) array or refuse with a message that says why.
"""

from __future__ import annotations

import itertools

import mrcfile
import numpy as np
import pytest

from napari_semietpicker.io.tomogram import read_tomogram

SHAPE = (10, 12, 14)  # z, y, x: every axis a different length
VOXEL = 13.48


def volume() -> np.ndarray:
    """A (z, y, x) volume whose value encodes its index: 10000 z + 100 y + x."""
    z, y, x = np.indices(SHAPE)
    return (10000 * z + 100 * y + x).astype(np.float32)


def write_permuted(path, vol: np.ndarray, axis_order: tuple[int, int, int],
                   voxel_size=VOXEL, origin=(0.0, 0.0, 0.0)) -> None:
    """Store ``vol`` with columns, rows, sections along MRC axes mapc, mapr, maps (x=1, z=3)."""
    mapc, mapr, maps = axis_order
    dim_of = {3: 0, 2: 1, 1: 2}  # MRC axis -> dimension of the (z, y, x) array
    stored = np.ascontiguousarray(np.transpose(vol, [dim_of[maps], dim_of[mapr], dim_of[mapc]]))
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stored)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = mapc, mapr, maps
        mrc.voxel_size = voxel_size
        mrc.header.origin = origin


@pytest.mark.parametrize("axis_order", list(itertools.permutations((1, 2, 3))))
def test_permuted_axis_orders_read_back_as_zyx(tmp_path, axis_order):
    path = tmp_path / "permuted.mrc"
    vol = volume()
    write_permuted(path, vol, axis_order)
    with mrcfile.open(path) as mrc:  # the file really is stored permuted
        assert (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps)) == axis_order
    tomogram = read_tomogram(path)
    assert tomogram.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(tomogram.data), vol)
    assert tomogram.voxel_size == pytest.approx(VOXEL, abs=1e-4)


def test_nonzero_origin_is_recorded_and_leaves_voxels_in_place(tmp_path):
    path = tmp_path / "origin.mrc"
    vol = volume()
    write_permuted(path, vol, (1, 2, 3), origin=(-100.0, 250.5, 3000.0))  # x, y, z
    tomogram = read_tomogram(path)
    assert tomogram.origin_A == pytest.approx((3000.0, 250.5, -100.0))  # z, y, x
    np.testing.assert_array_equal(np.asarray(tomogram.data), vol)
    # positions stay relative to the volume: voxel i at i * voxel size, whatever the origin
    assert tomogram.extent_A == pytest.approx((np.asarray(SHAPE) - 1) * VOXEL, abs=1e-3)


def test_origin_with_permuted_axes(tmp_path):
    path = tmp_path / "both.mrc"
    write_permuted(path, volume(), (3, 1, 2), origin=(1.0, 2.0, 3.0))
    tomogram = read_tomogram(path)
    assert tomogram.origin_A == pytest.approx((3.0, 2.0, 1.0))
    np.testing.assert_array_equal(np.asarray(tomogram.data), volume())


def test_anisotropic_voxels_are_refused_clearly(tmp_path):
    path = tmp_path / "aniso.mrc"
    write_permuted(path, volume(), (1, 2, 3), voxel_size=(10.0, 10.0, 12.5))
    with pytest.raises(ValueError, match=r"aniso\.mrc: anisotropic or invalid voxel size"):
        read_tomogram(path)


def test_invalid_axis_order_is_refused_clearly(tmp_path):
    path = tmp_path / "bad_axes.mrc"
    write_permuted(path, volume(), (1, 2, 3))
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.header.mapr = 1  # mapc = mapr = 1: not a permutation
    with pytest.raises(ValueError, match=r"bad_axes\.mrc: .*(axis order|not a readable MRC)"):
        read_tomogram(path)


def test_missing_voxel_size_needs_an_explicit_one(tmp_path):
    path = tmp_path / "nosize.mrc"
    write_permuted(path, volume(), (2, 1, 3), voxel_size=0.0)
    with pytest.raises(ValueError, match="no voxel size"):
        read_tomogram(path)
    tomogram = read_tomogram(path, voxel_size=VOXEL)
    assert tomogram.voxel_size == VOXEL
    np.testing.assert_array_equal(np.asarray(tomogram.data), volume())

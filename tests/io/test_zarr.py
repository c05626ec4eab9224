"""OME-Zarr and plain zarr with whichever zarr major is installed (CI runs this file with
zarr 2 and again with zarr 3): what we write reads back, and stores that the installed zarr
writes itself (zarr v2 and, with zarr 3, v3 with NGFF 0.5 metadata) open lazily."""

from __future__ import annotations

import json

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from napari_semietpicker.geometry import bin_volume  # noqa: E402
from napari_semietpicker.io.zarr_io import (  # noqa: E402
    is_zarr_path,
    read_zarr_levels,
    write_ome_zarr,
)

ZARR_MAJOR = int(zarr.__version__.split(".")[0])
#: zarr store formats the installed zarr writes: v2 always, v3 from zarr 3 on.
FORMATS = [2, 3] if ZARR_MAJOR >= 3 else [2]
SHAPE = (40, 56, 72)
VOXEL = 13.48


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)


def _group(path, zarr_format: int):
    kwargs = {"zarr_format": zarr_format} if ZARR_MAJOR >= 3 else {}
    return zarr.open_group(str(path), mode="w", **kwargs)


def _array(group, name: str, data: np.ndarray) -> None:
    create = group.create_array if ZARR_MAJOR >= 3 else group.create_dataset
    create(name, shape=data.shape, dtype=data.dtype, chunks=(16, 16, 16))[...] = data


def test_ome_zarr_we_write_reads_back_level_by_level(tmp_path, volume):
    path = tmp_path / "TS_1.zarr"
    write_ome_zarr(path, volume, VOXEL, chunks=32)
    # zarr v2 layout with NGFF 0.4 metadata: what copick 1.x and zarr 2 read
    attrs = json.loads((path / ".zattrs").read_text())
    assert (path / ".zgroup").is_file() and attrs["multiscales"][0]["version"] == "0.4"
    assert is_zarr_path(path)
    levels = read_zarr_levels(path)
    assert [t.shape for t in levels] == [SHAPE, (20, 28, 36), (10, 14, 18)]
    assert [t.voxel_size for t in levels] == pytest.approx([VOXEL, 2 * VOXEL, 4 * VOXEL])
    assert all(isinstance(t.data, zarr.Array) for t in levels)  # lazy
    np.testing.assert_array_equal(np.asarray(levels[0].data[:]), volume)
    np.testing.assert_allclose(np.asarray(levels[1].data[:]), bin_volume(volume, 2), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(levels[0].data[3:5, 10:12, 7]), volume[3:5, 10:12, 7])
    with pytest.raises(FileExistsError, match="TS_1.zarr: already exists"):
        write_ome_zarr(path, volume, VOXEL)
    write_ome_zarr(path, volume[::-1].copy(), VOXEL, overwrite=True)
    np.testing.assert_array_equal(np.asarray(read_zarr_levels(path)[0].data[:]), volume[::-1])


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_ome_zarr_written_by_zarr_itself_opens(tmp_path, volume, zarr_format):
    """NGFF 0.4 keeps ``multiscales`` in the v2 attributes, NGFF 0.5 under ``ome`` in v3."""
    path = tmp_path / f"v{zarr_format}.zarr"
    group = _group(path, zarr_format)
    _array(group, "s0", volume)
    _array(group, "s1", bin_volume(volume, 2))
    multiscales = [{
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [
            {"path": f"s{i}", "coordinateTransformations": [
                {"type": "scale", "scale": [0.1 * VOXEL * 2**i] * 3}]} for i in (0, 1)],
    }]
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscales[0]}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    assert is_zarr_path(path)
    levels = read_zarr_levels(path)
    assert [t.voxel_size for t in levels] == pytest.approx([VOXEL, 2 * VOXEL])
    np.testing.assert_array_equal(np.asarray(levels[0].data[:]), volume)
    assert levels[1].shape == (20, 28, 36) and levels[0].name == f"v{zarr_format}"


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_plain_zarr_array_and_group_open_with_a_voxel_size(tmp_path, volume, zarr_format):
    array_path = tmp_path / "array.zarr"
    kwargs = {"zarr_format": zarr_format} if ZARR_MAJOR >= 3 else {}
    zarr.open_array(str(array_path), mode="w", shape=SHAPE, dtype="float32",
                    chunks=(16, 16, 16), **kwargs)[...] = volume
    (alone,) = read_zarr_levels(array_path, voxel_size=VOXEL)
    np.testing.assert_array_equal(np.asarray(alone.data[:]), volume)
    with pytest.raises(ValueError, match=r"array\.zarr: plain zarr has no voxel size"):
        read_zarr_levels(array_path)
    group_path = tmp_path / "group.zarr"
    group = _group(group_path, zarr_format)
    _array(group, "0", volume)
    _array(group, "1", bin_volume(volume, 2))
    levels = read_zarr_levels(group_path, voxel_size=VOXEL)
    assert [t.voxel_size for t in levels] == pytest.approx([VOXEL, 2 * VOXEL])
    np.testing.assert_array_equal(np.asarray(levels[1].data[:]), bin_volume(volume, 2))

"""Fuzzed copick JSON, STAR, OME-Zarr metadata and model configs: a result or a clear error.

A clear error is a ValueError (or FileNotFoundError) whose message names the file; any
other exception (KeyError, TypeError, AttributeError, ...) fails. Bounded: few examples,
small inputs, no deadline.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.io.formats import read_picks
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.star import write_star
from napari_semietpicker.io.zarr_io import read_zarr_tomogram
from napari_semietpicker.model.checkpoint import ModelCard, load_card, save_model
from napari_semietpicker.model.network import ModelConfig, build_model

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
KEYS = ["pickable_object_name", "run_name", "points", "location", "x", "y", "z", "score",
        "transformation_", "unit", "multiscales", "datasets", "path", "axes", "unit", "type",
        "coordinateTransformations", "scale", "translation", "classes", "name", "radius_A",
        "voxel_size", "model", "n_classes", "preset", "thresholds", "format_version"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True)
    | st.sampled_from(["", "angstrom", "blob", "0", "scale", "space", "tiny", "nm"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=12)


def _mutate(value, path: list, replacement):
    """``value`` with the item at ``path`` (keys/indices) replaced, or deleted (None path end)."""
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and value:
        key = list(value)[head % len(value)]
        copy = dict(value)
        copy[key] = _mutate(value[key], rest, replacement)
        return copy
    if isinstance(value, list) and value:
        copy = list(value)
        copy[head % len(value)] = _mutate(value[head % len(value)], rest, replacement)
        return copy
    return replacement


def _assert_clear(err: Exception, path: Path) -> None:
    assert isinstance(err, ValueError | FileNotFoundError), repr(err)
    assert path.name in str(err), str(err)


COPICK = {"pickable_object_name": "ribosome", "run_name": "TS_1", "unit": "angstrom",
          "user_id": "u", "session_id": "0",
          "points": [{"location": {"x": 10.0, "y": 20.0, "z": 30.0}, "score": 1.0,
                      "transformation_": np.eye(4).tolist()}]}


@FUZZ
@given(path=st.lists(st.integers(0, 6), max_size=5), replacement=JSON_VALUES)
def test_fuzzed_copick_json_gives_picks_or_a_clear_error(tmp_path, path, replacement):
    file = tmp_path / "picks.json"
    file.write_text(json.dumps(_mutate(COPICK, path, replacement)))
    try:
        table = read_picks(file)
    except Exception as err:  # noqa: BLE001 - the type is what is tested
        _assert_clear(err, file)
    else:
        assert np.isfinite(table[["x", "y", "z"]].to_numpy(float)).all()


@pytest.fixture(scope="module")
def star_text(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("star") / "good.star"
    table = picks_from_positions(np.array([[100.0, 200.0, 300.0], [50.0, 60.0, 70.0]]),
                                 "TS_1", "ribosome")
    write_star(table, path, version="relion5", voxel_size=10.0, shape=(40, 50, 60))
    return path.read_text()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8),
                                st.text(alphabet="_rln loop data #\n0123456789.-eX",
                                        max_size=6)), min_size=1, max_size=4))
def test_fuzzed_star_gives_picks_or_a_clear_error(tmp_path, star_text, edits):
    text = star_text
    for position, cut, insert in edits:
        position %= len(text) + 1
        text = text[:position] + insert + text[position + cut:]
    file = tmp_path / "picks.star"
    file.write_text(text)
    try:
        read_picks(file, voxel_size=10.0, shape=(40, 50, 60))
    except Exception as err:  # noqa: BLE001
        _assert_clear(err, file)


OME = [{"version": "0.4", "name": "t",
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [10.0, 10.0, 10.0]}]}]}]


@pytest.fixture(scope="module")
def zarr_store(tmp_path_factory) -> Path:
    zarr = pytest.importorskip("zarr")
    path = tmp_path_factory.mktemp("zarr") / "good.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_dataset("0", data=np.zeros((16, 16, 16), dtype=np.float32))
    group.attrs["multiscales"] = OME
    return path


@FUZZ
@given(path=st.lists(st.integers(0, 6), max_size=6), replacement=JSON_VALUES)
def test_fuzzed_ome_zarr_metadata_gives_a_tomogram_or_a_clear_error(tmp_path, zarr_store,
                                                                    path, replacement):
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "t.zarr"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(zarr_store, store)
    zarr.open_group(str(store), mode="r+").attrs["multiscales"] = _mutate(OME, path, replacement)
    try:
        tomogram = read_zarr_tomogram(store)
    except Exception as err:  # noqa: BLE001
        _assert_clear(err, store)
    else:
        assert tomogram.voxel_size > 0 and np.isfinite(tomogram.voxel_size)


@pytest.fixture(scope="module")
def model_config(tmp_path_factory) -> dict:
    model_dir = tmp_path_factory.mktemp("model") / "m"
    config = ModelConfig(n_classes=1, preset="tiny")
    save_model(model_dir, build_model(config), ModelCard([ParticleClass("blob", 60.0)], 10.0,
                                                         config, thresholds={"blob": 0.4}))
    return json.loads((model_dir / "config.json").read_text())


@FUZZ
@given(path=st.lists(st.integers(0, 6), max_size=4), replacement=JSON_VALUES)
def test_fuzzed_model_config_gives_a_valid_card_or_a_clear_error(tmp_path, model_config,
                                                                 path, replacement):
    model_dir = tmp_path / "m"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(_mutate(model_config, path, replacement)))
    try:
        card = load_card(model_dir)
    except Exception as err:  # noqa: BLE001
        _assert_clear(err, model_dir)
    else:  # whatever loaded is usable as it stands
        assert card.voxel_size > 0 and len(card.classes) == card.model.n_classes
        assert all(0 <= t <= 1 for t in card.thresholds.values())
        assert len({c.name for c in card.classes}) == len(card.classes)


def test_a_star_coordinate_that_is_not_a_number_is_named_with_its_file(tmp_path):
    """Found by the STAR fuzz test: a bare float conversion error named neither file nor column."""
    file = tmp_path / "p.star"
    file.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
                    "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n"
                    "_semietpickerParticleType #5\nTS_1\t0.0\t-50.0\t1e6X8\tribosome\n"
                    "TS_1\t-230.0\t-190.0\t-150.0\tribosome\n")
    with pytest.raises(ValueError, match=r"p\.star: column rlnCenteredCoordinateZAngst holds"):
        read_picks(file, voxel_size=10.0, shape=(40, 50, 60))

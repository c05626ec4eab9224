"""Reader, writer and sample data: probes, units and round trips with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_semietpicker._reader import napari_get_reader
from napari_semietpicker._sample import SAMPLE_SHAPE, SAMPLE_VOXEL_A, sample_tomogram
from napari_semietpicker._writer import write_points
from napari_semietpicker.classes import DEFAULT_RADIUS_A, PALETTE, classes_for_names
from napari_semietpicker.io.autosave import autosave_path, load_autosave, save_autosave, set_aside
from napari_semietpicker.io.picks import picks_from_positions, read_picks_csv, write_picks_csv
from napari_semietpicker.io.tomogram import write_tomogram
from napari_semietpicker.io.zarr_io import write_ome_zarr
from napari_semietpicker.layers import META, PICKS, REFERENCE, picks_from_layer

VOXEL = 13.48
SHAPE = (20, 36, 28)  # z, y, x: non-cubic


@pytest.fixture
def mrc_path(tmp_path: Path) -> Path:
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    path = tmp_path / "TS_01.mrc"
    write_tomogram(path, data, VOXEL)
    return path


def known_picks(experiment: str = "TS_01") -> pd.DataFrame:
    """Positions with awkward decimals, two classes (one CZII, one not)."""
    zyx = np.array([[13.48, 101.237, 250.001], [200.5, 3.333, 77.777], [55.555, 400.12, 9.99]])
    return pd.concat([picks_from_positions(zyx[:2], experiment, "ribosome"),
                      picks_from_positions(zyx[2:], experiment, "spliceosome")],
                     ignore_index=True)


def layer_tuples(path: Path) -> list[tuple]:
    reader = napari_get_reader(str(path))
    assert callable(reader)
    return reader(str(path))


@pytest.mark.parametrize("name, content", [
    ("notes.txt", b"hello"),
    ("garbage.mrc", bytes(range(256)) * 8),
    ("empty.mrc", b""),
    ("table.csv", b"a,b,c\n1,2,3\n"),
    ("binary.csv", b"\x00\x01\x02experiment,particle_type,x,y,z"),
    ("words.coords", b"one two three\n"),
    ("plain.star", b"data_\nloop_\n_rlnAngleRot #1\n1.0\n"),
])
def test_probe_returns_none_for_what_it_cannot_read(tmp_path: Path, name: str,
                                                     content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert napari_get_reader(str(path)) is None


@pytest.mark.parametrize("path", ["/no/such/file.mrc", "", 42, None, ["/no/such.csv"], []])
def test_probe_never_raises(path: object) -> None:
    assert napari_get_reader(path) is None  # type: ignore[arg-type]


def test_probe_ignores_plain_folders(tmp_path: Path) -> None:
    assert napari_get_reader(str(tmp_path)) is None


def test_mrc_opens_at_true_voxel_size(mrc_path: Path) -> None:
    [(data, attrs, kind)] = layer_tuples(mrc_path)
    assert kind == "image"
    assert data.shape == SHAPE
    np.testing.assert_allclose(attrs["scale"], (VOXEL,) * 3, rtol=1e-6)
    assert attrs["metadata"][META]["tomogram"] == "TS_01"
    assert float(data[3, 5, 7]) == 3 * SHAPE[1] * SHAPE[2] + 5 * SHAPE[2] + 7


def test_zarr_opens_at_true_voxel_size(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    path = tmp_path / "TS_02.zarr"
    write_ome_zarr(path, data, VOXEL, levels=1)
    [(layer_data, attrs, kind)] = layer_tuples(path)
    assert kind == "image" and layer_data.shape == SHAPE
    np.testing.assert_allclose(attrs["scale"], (VOXEL,) * 3, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer_data[:]), data)


def test_csv_gives_one_points_layer_per_class(tmp_path: Path) -> None:
    path = tmp_path / "picks.csv"
    write_picks_csv(known_picks(), path)
    layers = layer_tuples(path)
    assert [attrs["name"] for _, attrs, _ in layers] == ["ribosome picks", "spliceosome picks"]
    by_class = {attrs["metadata"][META]["class"]: (data, attrs) for data, attrs, _ in layers}
    data, attrs = by_class["ribosome"]
    assert attrs["size"] == 300.0  # CZII radius 150 A, size is the diameter
    assert attrs["metadata"][META]["role"] == PICKS
    np.testing.assert_allclose(data, [[13.48, 101.237, 250.001], [200.5, 3.333, 77.777]],
                               atol=1e-3)
    _, attrs = by_class["spliceosome"]
    assert attrs["size"] == 2 * DEFAULT_RADIUS_A
    assert attrs["border_color"] not in {c.color for c in classes_for_names(["ribosome"])}


def test_csv_with_several_tomograms_keeps_layer_names_apart(tmp_path: Path) -> None:
    path = tmp_path / "picks.csv"
    write_picks_csv(pd.concat([known_picks("TS_01"), known_picks("TS_02")]), path)
    names = [attrs["name"] for _, attrs, _ in layer_tuples(path)]
    assert len(names) == 4 and len(set(names)) == 4
    assert "ribosome picks [TS_02]" in names


def test_csv_layers_writer_csv_round_trip(tmp_path: Path) -> None:
    src, dst = tmp_path / "picks.csv", tmp_path / "out.csv"
    write_picks_csv(known_picks(), src)
    dst.write_text("previous\n")
    written = write_points(str(dst), layer_tuples(src))
    assert written == [str(dst)]
    assert (tmp_path / "out.csv.bak").read_text() == "previous\n"
    back = read_picks_csv(dst).sort_values(["particle_type", "x"]).reset_index(drop=True)
    want = known_picks().sort_values(["particle_type", "x"]).reset_index(drop=True)
    assert list(back["particle_type"]) == list(want["particle_type"])
    assert set(back["experiment"]) == {"TS_01"}
    np.testing.assert_allclose(back[["x", "y", "z"]], want[["x", "y", "z"]], atol=0.01)


def test_copick_json_round_trip_one_file_per_class(tmp_path: Path) -> None:
    src = tmp_path / "picks.csv"
    write_picks_csv(known_picks(), src)
    written = write_points(str(tmp_path / "out.json"), layer_tuples(src))
    classes = sorted(pd.unique(known_picks()["particle_type"]))
    assert written == [str(tmp_path / f"out_TS_01_{c}.json") for c in classes]
    layers = []
    for path in written:
        reader = napari_get_reader(path)
        assert reader is not None  # a copick picks file is recognised by its content
        layers += reader(path)
    back = pd.concat([picks_from_layer(data, attrs["metadata"], scale=attrs["scale"])
                      for data, attrs, _ in layers])
    back = back.sort_values(["particle_type", "x"]).reset_index(drop=True)
    want = known_picks().sort_values(["particle_type", "x"]).reset_index(drop=True)
    assert list(back["particle_type"]) == list(want["particle_type"])
    assert set(back["experiment"]) == {"TS_01"}
    np.testing.assert_allclose(back[["x", "y", "z"]], want[["x", "y", "z"]], atol=0.01)
    (tmp_path / "other.json").write_text('{"name": "not picks"}')
    assert napari_get_reader(str(tmp_path / "other.json")) is None


def test_writer_takes_class_from_layer_name_without_metadata(tmp_path: Path) -> None:
    points = np.array([[10.0, 20.0, 30.0]])
    tagged = (np.array([[1.0, 2.0, 3.0]]),
              {"name": "ribosome picks", "metadata": {META: {"class": "ribosome",
                                                            "tomogram": "TS_07"}}}, "points")
    plain = (points, {"name": "my blobs", "metadata": {}, "features": pd.DataFrame(
        {"score": [np.nan]})}, "points")
    write_points(str(tmp_path / "x.csv"), [tagged, plain])
    df = read_picks_csv(tmp_path / "x.csv")
    row = df[df["particle_type"] == "my blobs"].iloc[0]
    assert row["experiment"] == "TS_07"  # the one tomogram the other layers name
    assert (row["x"], row["y"], row["z"]) == (30.0, 20.0, 10.0)
    assert row["score"] == 1.0  # a point added by hand


def test_star_and_coords_round_trip_through_sibling_tomogram(tmp_path: Path,
                                                             mrc_path: Path) -> None:
    src = tmp_path / "picks.csv"
    write_picks_csv(known_picks(), src)
    layers = layer_tuples(src)  # picks beside TS_01.mrc: they learn its voxel size and shape
    assert layers[0][1]["metadata"][META]["voxel_size"] == pytest.approx(VOXEL)
    assert layers[0][1]["metadata"][META]["shape"] == list(SHAPE)

    star = tmp_path / "TS_01.star"
    write_points(str(star), layers)
    back = np.concatenate([t[0] for t in layer_tuples(star)])
    np.testing.assert_allclose(np.sort(back, axis=0),
                               np.sort(np.concatenate([t[0] for t in layers]), axis=0),
                               atol=0.01)

    written = write_points(str(tmp_path / "TS_01.coords"), layers)
    assert sorted(Path(p).name for p in written) == ["TS_01_ribosome.coords",
                                                     "TS_01_spliceosome.coords"]
    [(data, attrs, _)] = layer_tuples(tmp_path / "TS_01_ribosome.coords")
    assert attrs["metadata"][META]["class"] == "ribosome"
    assert attrs["scale"] == pytest.approx((VOXEL,) * 3)  # the sibling tomogram's scale
    np.testing.assert_allclose(data * VOXEL, [[13.48, 101.237, 250.001], [200.5, 3.333, 77.777]],
                               atol=0.01)


def test_coords_without_tomogram_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lonely.coords"
    path.write_text("1 2 3\n")
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(ValueError, match="put its tomogram beside it"):
        reader(str(path))


def test_writer_refuses_star_without_voxel_size(tmp_path: Path) -> None:
    layer = (np.zeros((1, 3)), {"name": "a", "metadata": {}}, "points")
    with pytest.raises(ValueError, match="save as .csv"):
        write_points(str(tmp_path / "x.star"), [layer])


def test_classes_for_names_prefers_the_czii_preset() -> None:
    classes = classes_for_names(["apo-ferritin", "mystery", "other"])
    assert classes[0].radius_A == 60.0
    colors = [c.color for c in classes]
    assert len(set(colors)) == 3 and set(colors) <= set(PALETTE)


def test_sample_layers_line_up() -> None:
    layers = sample_tomogram()
    (image, image_attrs, kind), *points = layers
    assert kind == "image" and image.shape == SAMPLE_SHAPE
    assert image_attrs["scale"] == (SAMPLE_VOXEL_A,) * 3
    extent = (np.asarray(SAMPLE_SHAPE) - 1) * SAMPLE_VOXEL_A
    assert len(points) >= 4
    for data, attrs, kind in points:
        meta = attrs["metadata"][META]
        assert kind == "points" and meta["role"] == REFERENCE
        assert meta["tomogram"] == image_attrs["name"]
        assert attrs["scale"] == image_attrs["scale"]  # one z step is one slice
        world = data * np.asarray(attrs["scale"])
        assert len(data) and np.all(world >= 0) and np.all(world <= extent)
    # reference centres sit on particles (protein is dark): darker than the volume on average
    all_idx = np.concatenate([np.round(d).astype(int) for d, _, _ in points])
    local = [image[max(z - 2, 0):z + 3, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].mean()
             for z, y, x in all_idx]
    assert np.mean(local) < image.mean()


def test_autosave_round_trip_and_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      mrc_path: Path) -> None:
    monkeypatch.setenv("SEMIETPICKER_AUTOSAVE_DIR", str(tmp_path / "auto"))
    by_name = autosave_path("sim_sample")
    by_file = autosave_path(mrc_path)
    other = tmp_path / "elsewhere" / "TS_01.mrc"
    assert by_name == tmp_path / "auto" / "sim_sample.picks.csv"
    assert by_file.name.startswith("TS_01-") and by_file != autosave_path(other)
    assert load_autosave(by_file) is None
    save_autosave(known_picks(), by_file)
    back = load_autosave(by_file)
    np.testing.assert_allclose(back[["x", "y", "z"]], known_picks()[["x", "y", "z"]],
                               atol=0.001)
    save_autosave(known_picks().iloc[:1], by_file, keep_previous=True)
    assert len(read_picks_csv(by_file.with_name(by_file.name + ".bak"))) == 3
    by_file.write_text("experiment,particle_type,x,y,z\nTS_01,a,oops,1,2\n")
    with pytest.raises(ValueError, match="oops"):
        load_autosave(by_file)
    kept = set_aside(by_file)
    assert kept.name.endswith(".unreadable") and not by_file.exists()


def test_viewer_opens_and_saves_through_the_manifest(make_napari_viewer, tmp_path: Path,
                                                     mrc_path: Path) -> None:
    src, dst = tmp_path / "picks.csv", tmp_path / "saved.csv"
    write_picks_csv(known_picks(), src)
    viewer = make_napari_viewer()
    viewer.open(str(mrc_path), plugin="napari-semietpicker")
    viewer.open(str(src), plugin="napari-semietpicker")
    image = viewer.layers["TS_01"]
    np.testing.assert_allclose(image.scale, (VOXEL,) * 3, rtol=1e-6)
    points = [layer for layer in viewer.layers if layer.name.endswith(" picks")]
    assert len(points) == 2
    assert all(np.allclose(p.scale, image.scale) for p in points)  # beside its tomogram
    points[0].add(np.array([[1.0, 2.0, 3.0]]) / points[0].scale)
    viewer.layers.selection = set(points)
    assert viewer.layers.save(str(dst), selected=True, plugin="napari-semietpicker")
    back = read_picks_csv(dst)
    assert len(back) == 4 and set(back["experiment"]) == {"TS_01"}
    added = back[np.isclose(back["x"], 3.0) & np.isclose(back["z"], 1.0)]
    assert list(added["particle_type"]) == [points[0].metadata[META]["class"]]


def test_opened_tomograms_get_percentile_contrast(tmp_path: Path) -> None:
    """A few extreme voxels (a gold bead) must not set the contrast of the whole tomogram."""
    data = np.random.default_rng(0).normal(size=(40, 60, 50)).astype(np.float32)
    data[10:12, 10:12, 10:12] = 1000.0
    path = tmp_path / "beads.mrc"
    write_tomogram(path, data, VOXEL)
    [(_, attrs, _)] = layer_tuples(path)
    low, high = attrs["contrast_limits"]
    assert -4 < low < -2 and 2 < high < 4  # about the 0.5 and 99.5 % of a unit normal


def test_sample_picks_saved_as_star_from_the_viewer_reopen_at_the_same_place(
        make_napari_viewer, tmp_path: Path) -> None:
    """The in-memory sample has no tomogram file to stand beside a RELION 5 STAR: the file
    carries each tomogram's size and pixel size itself, and reopens (it raised)."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-semietpicker", "simulated")
    references = [layer for layer in viewer.layers if layer._type_string == "points"]
    viewer.layers.selection = set(references)
    path = tmp_path / "sample.star"
    assert viewer.layers.save(str(path), selected=True, plugin="napari-semietpicker")
    saved = pd.concat([picks_from_layer(la.data, la.metadata, scale=la.scale)
                       for la in references], ignore_index=True)
    reader = napari_get_reader(str(path))
    assert reader is not None
    back = pd.concat([picks_from_layer(data, attrs["metadata"], scale=attrs["scale"])
                      for data, attrs, _ in reader(str(path))], ignore_index=True)
    key = ["particle_type", "x", "y", "z"]
    expected = saved.sort_values(key).reset_index(drop=True)
    got = back.sort_values(key).reset_index(drop=True)
    assert list(got["particle_type"]) == list(expected["particle_type"])
    np.testing.assert_allclose(got[["x", "y", "z"]], expected[["x", "y", "z"]], atol=1e-3)
    assert set(got["experiment"]) == {"sim_sample"}

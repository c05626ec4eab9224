"""Round trips through the field's formats: OME-Zarr, copick, RELION 4/5 STAR, .coords.

Every round trip uses a non-cubic tomogram (40 x 56 x 72), voxel size 13.48 A, and a
binned level of it, and must give back the same Angstrom positions to 0.01 A. Conventions
are also pinned by hand-worked values and checked against copick's own RELION conversion,
so that both directions cannot drift together.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

copick = pytest.importorskip("copick")
starfile = pytest.importorskip("starfile")
zarr = pytest.importorskip("zarr")

from copick.models import PickableObject  # noqa: E402

from napari_semietpicker.geometry import bin_volume  # noqa: E402
from napari_semietpicker.io.copick_io import (  # noqa: E402
    list_runs,
    open_project,
    read_copick_picks,
    read_copick_tomogram,
    tomogram_shapes,
    write_copick_picks,
)
from napari_semietpicker.io.formats import (  # noqa: E402
    convert_picks,
    picks_format,
    read_any_tomogram,
    read_picks,
    write_picks,
)
from napari_semietpicker.io.picks import picks_from_positions  # noqa: E402
from napari_semietpicker.io.star import read_star, write_star  # noqa: E402
from napari_semietpicker.io.tomogram import bin_tomogram, write_tomogram  # noqa: E402
from napari_semietpicker.io.zarr_io import read_zarr_tomogram, write_ome_zarr  # noqa: E402

SHAPE = (40, 56, 72)  # z, y, x
VOXEL = 13.48
TOL = 0.01  # Angstrom


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def ome_path(tmp_path_factory, volume):
    path = tmp_path_factory.mktemp("zarr") / "TS_1.zarr"
    write_ome_zarr(path, volume, VOXEL)
    return path


def make_picks(experiment: str, particle_type: str, n: int, seed: int, extent_A) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    zyx = rng.uniform(0, 1, (n, 3)) * np.asarray(extent_A)
    return picks_from_positions(zyx, experiment, particle_type, score=rng.uniform(0, 1, n))


def same_positions(a: pd.DataFrame, b: pd.DataFrame, tol: float = TOL) -> None:
    """Same rows (tomogram, class, x, y, z) up to order, positions to ``tol`` Angstrom."""
    keys = ["experiment", "particle_type", "x", "y", "z"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    assert len(a) == len(b)
    assert list(a["experiment"]) == list(b["experiment"])
    assert list(a["particle_type"]) == list(b["particle_type"])
    np.testing.assert_allclose(a[["x", "y", "z"]].to_numpy(), b[["x", "y", "z"]].to_numpy(),
                               atol=tol, rtol=0)


# --- OME-Zarr and plain zarr ------------------------------------------------------------

def test_ome_zarr_levels_are_lazy_with_their_own_voxel_size(ome_path, volume):
    for level, factor in ((0, 1), (1, 2), (2, 4)):
        tomogram = read_zarr_tomogram(ome_path, level=level)
        assert isinstance(tomogram.data, zarr.Array)  # lazy: nothing read yet
        assert tomogram.name == "TS_1"
        assert tomogram.voxel_size == pytest.approx(VOXEL * factor)
        assert tomogram.shape == tuple(s // factor for s in SHAPE)
    binned = read_zarr_tomogram(ome_path, level=1)
    np.testing.assert_allclose(np.asarray(binned.data[3:7, :, 5]), bin_volume(volume, 2)[3:7, :, 5],
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(read_any_tomogram(ome_path).data), volume)
    with pytest.raises(ValueError, match=r"TS_1\.zarr: no level 3"):
        read_zarr_tomogram(ome_path, level=3)


def test_ome_zarr_we_write_reads_in_copick(ome_path):
    from copick.util.ome import get_voxel_size_from_zarr

    group = zarr.open_group(str(ome_path), mode="r")
    assert get_voxel_size_from_zarr(group) == pytest.approx(VOXEL)


def test_opening_a_huge_zarr_reads_no_voxels(tmp_path):
    """A 1000 x 1000 x 800 float32 volume (3.2 GB, never written) opens and slices at once."""
    path = tmp_path / "huge.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_dataset("0", shape=(1000, 1000, 800), chunks=(64, 64, 64), dtype="f4")
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"], "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [VOXEL] * 3}]}]}]
    tomogram = read_any_tomogram(path)
    assert tomogram.shape == (1000, 1000, 800)
    assert np.asarray(tomogram.data[500, :4, :4]).shape == (4, 4)


def test_ome_zarr_units_and_translation(tmp_path, volume):
    path = tmp_path / "nm.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_dataset("0", data=volume, chunks=(16, 16, 16))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"], "datasets": [
        {"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.348] * 3},
            {"type": "translation", "translation": [1.0, 2.0, 3.0]}]}]}]
    tomogram = read_any_tomogram(path)
    assert tomogram.voxel_size == pytest.approx(VOXEL)
    assert tomogram.origin_A == pytest.approx((10.0, 20.0, 30.0))
    group.attrs["multiscales"] = [{**group.attrs["multiscales"][0], "axes": [
        {"name": a, "type": "space", "unit": "furlong"} for a in "zyx"]}]
    with pytest.raises(ValueError, match="unknown axis unit 'furlong'"):
        read_any_tomogram(path)


def test_plain_zarr_needs_a_voxel_size(tmp_path, volume):
    path = tmp_path / "plain.zarr"
    zarr.save_array(str(path), volume)
    with pytest.raises(ValueError, match=r"plain\.zarr: plain zarr has no voxel size"):
        read_any_tomogram(path)
    tomogram = read_any_tomogram(path, voxel_size=VOXEL)
    assert tomogram.voxel_size == VOXEL and tomogram.shape == SHAPE
    np.testing.assert_array_equal(tomogram.data[:], volume)


def test_mrc_levels_are_mean_binned_on_reading(tmp_path, volume):
    path = tmp_path / "t.mrc"
    odd = np.pad(volume, ((0, 3), (0, 1), (0, 2)))  # trailing planes that fill no bin
    write_tomogram(path, odd, VOXEL)
    assert read_any_tomogram(path).shape == odd.shape
    level2 = read_any_tomogram(path, level=2)
    assert level2.voxel_size == pytest.approx(4 * VOXEL)
    assert level2.shape == (10, 14, 18)
    expected = volume.reshape(10, 4, 14, 4, 18, 4).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(level2.data, expected, rtol=1e-5, atol=1e-6)
    # Slabs of z planes give the same result as one pass.
    level0 = read_any_tomogram(path)
    np.testing.assert_array_equal(bin_tomogram(level0, 4, slab=2).data, level2.data)
    np.testing.assert_array_equal(bin_tomogram(level0, 2, slab=2).data,
                                  bin_tomogram(level0, 2, slab=64).data)
    with pytest.raises(ValueError, match=r"^t: shape .* smaller than 8 voxels"):
        read_any_tomogram(path, level=3)
    with pytest.raises(ValueError, match="level must be 0 or more"):
        read_any_tomogram(path, level=-1)


# --- picks round trips ------------------------------------------------------------------

FORMATS = [("csv", ".csv"), ("relion4", ".star"), ("relion5", ".star"), ("coords", ".coords"),
           ("copick", ".json")]


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("fmt,suffix", FORMATS)
def test_picks_round_trip_every_format(tmp_path, ome_path, level, fmt, suffix):
    tomogram = read_any_tomogram(ome_path, level=level)
    picks = make_picks(tomogram.name, "ribosome", 25, seed=level, extent_A=tomogram.extent_A)
    if fmt not in ("coords", "copick"):  # these hold one tomogram and one class per file
        picks = pd.concat([picks, make_picks("TS_2", "apo-ferritin", 9, 5, tomogram.extent_A)])
    path = tmp_path / f"picks{suffix}"
    shapes = {"TS_1": tomogram.shape, "TS_2": (30, 50, 60)}
    write_picks(picks, path, format=fmt, voxel_size=tomogram.voxel_size,
                shape_by_experiment=shapes)
    assert picks_format(path) == fmt
    back = read_picks(path, voxel_size=tomogram.voxel_size, shape=shapes,
                      particle_type="ribosome", tomogram_name=tomogram.name)
    same_positions(picks, back)
    if fmt != "coords":
        np.testing.assert_allclose(np.sort(back["score"]), np.sort(picks["score"]), atol=1e-3)


def test_convert_chain_through_every_format_with_a_binned_tomogram(tmp_path, ome_path):
    binned = read_any_tomogram(ome_path, level=1)
    picks = make_picks("TS_1", "ribosome", 30, seed=3, extent_A=binned.extent_A)
    src = tmp_path / "picks.csv"
    write_picks(picks, src)
    chain = ["a.star", "b.star", "c.coords", "d.json", "e.csv"]
    formats = ["relion5", "relion4", None, None, None]
    for dst, fmt in zip(chain, formats, strict=True):
        convert_picks(src, tmp_path / dst, format=fmt, tomogram=binned, particle_type="ribosome")
        src = tmp_path / dst
    assert picks_format(tmp_path / "b.star") == "relion4"
    same_positions(picks, read_picks(src))


def test_relion4_at_unbinned_pixels_from_binned_coords(tmp_path, ome_path):
    """bin-2 .coords -> RELION 4 in unbinned pixels: the pixel values double, Angstrom stays."""
    binned = read_any_tomogram(ome_path, level=1)
    picks = make_picks("TS_1", "ribosome", 12, seed=4, extent_A=binned.extent_A)
    write_picks(picks, tmp_path / "p.coords", voxel_size=binned.voxel_size)
    convert_picks(tmp_path / "p.coords", tmp_path / "p.star", format="relion4", tomogram=binned,
                  particle_type="ribosome", out_voxel_size=VOXEL)
    star = starfile.read(tmp_path / "p.star")
    coords = np.loadtxt(tmp_path / "p.coords")
    np.testing.assert_allclose(star["rlnCoordinateX"], coords[:, 0] * 2, atol=1e-5)
    same_positions(picks.drop(columns="score"), read_picks(tmp_path / "p.star", voxel_size=VOXEL))


def test_star_conventions_by_hand_and_against_copick(tmp_path):
    from copick.util.formats import relion_coordinates_to_angstrom

    # voxel (x=10, y=0, z=39) of a 40 x 56 x 72 (z, y, x) tomogram; centre = shape / 2 voxels
    picks = picks_from_positions(np.array([[39 * VOXEL, 0.0, 10 * VOXEL]]), "TS_1", "ribosome")
    write_star(picks, tmp_path / "r4.star", version="relion4", voxel_size=VOXEL)
    write_star(picks, tmp_path / "r5.star", version="relion5", voxel_size=VOXEL, shape=SHAPE)
    r4, blocks = starfile.read(tmp_path / "r4.star"), starfile.read(tmp_path / "r5.star")
    r5 = blocks["particles"]  # RELION 5 files hold several blocks; ours the tomogram sizes too
    assert blocks["tomograms"][["rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"]].iloc[0] \
        .tolist() == list(SHAPE[::-1])
    assert list(r4[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].iloc[0]) == \
        pytest.approx([10.0, 0.0, 39.0])
    centred = r5[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                  "rlnCenteredCoordinateZAngst"]].iloc[0]
    assert list(centred) == pytest.approx([(10 - 36) * VOXEL, -28 * VOXEL, (39 - 20) * VOXEL])
    centre = tuple(s * VOXEL / 2 for s in SHAPE[::-1])
    expected = picks[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(relion_coordinates_to_angstrom(r5, tomogram_center=centre),
                               expected, atol=TOL)
    np.testing.assert_allclose(relion_coordinates_to_angstrom(r4, tilt_series_pixel_size=VOXEL),
                               expected, atol=TOL)


def test_star_from_elsewhere_without_our_columns(tmp_path):
    """A RELION 4 file with numeric tomogram names, an optics pixel size and no class column."""
    particles = pd.DataFrame({"rlnTomoName": ["001", "001"], "rlnCoordinateX": [1.0, 2.0],
                              "rlnCoordinateY": [3.0, 4.0], "rlnCoordinateZ": [5.0, 6.0],
                              "rlnOpticsGroup": [1, 1]})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [VOXEL]})
    path = tmp_path / "other.star"
    starfile.write({"optics": optics, "particles": particles}, path)
    with pytest.raises(ValueError, match=r"other\.star: no particle class column"):
        read_picks(path)
    df = read_picks(path, particle_type="ribosome")
    assert list(df["experiment"]) == ["001", "001"]  # not the integer 1
    assert df["x"].tolist() == pytest.approx([VOXEL, 2 * VOXEL])
    no_name = particles.drop(columns=["rlnTomoName", "rlnOpticsGroup"])
    starfile.write(no_name, tmp_path / "TS_9.star")
    df = read_star(tmp_path / "TS_9.star", particle_type="ribosome", voxel_size=2.0)
    assert set(df["experiment"]) == {"TS_9"} and df["z"].tolist() == [10.0, 12.0]


def test_missing_requirements_name_the_file_and_what_is_missing(tmp_path):
    picks = make_picks("TS_1", "ribosome", 3, seed=1, extent_A=(100, 100, 100))
    with pytest.raises(ValueError, match=r"p\.star: RELION 5 needs the shape and voxel size"):
        write_picks(picks, tmp_path / "p.star")
    with pytest.raises(ValueError, match=r"p\.star: RELION 4 needs the pixel size"):
        write_picks(picks, tmp_path / "p.star", format="relion4")
    with pytest.raises(ValueError, match=r"p\.coords: .*voxel_size"):
        write_picks(picks, tmp_path / "p.coords")
    write_picks(picks, tmp_path / "p.star", voxel_size=VOXEL, shape_by_experiment=SHAPE)
    same_positions(picks.drop(columns="score", errors="ignore"),
                   read_picks(tmp_path / "p.star"))  # ours carries the tomogram sizes
    particles_only = starfile.read(tmp_path / "p.star")["particles"]  # as RELION's own
    starfile.write(particles_only, tmp_path / "p.star", overwrite=True)
    with pytest.raises(ValueError, match=r"p\.star: RELION 5 centred coordinates need"):
        read_picks(tmp_path / "p.star")
    with pytest.raises(ValueError, match=r"p\.star: no tomogram shape for 'TS_1'"):
        read_picks(tmp_path / "p.star", voxel_size=VOXEL, shape={"TS_2": SHAPE})
    write_picks(picks, tmp_path / "p.coords", voxel_size=VOXEL)
    with pytest.raises(ValueError, match=r"p\.coords: .*give voxel_size, particle_type"):
        read_picks(tmp_path / "p.coords")
    two = pd.concat([picks, picks.assign(particle_type="apo-ferritin")])
    with pytest.raises(ValueError, match=r"q\.coords: a \.coords file holds one tomogram and one"):
        write_picks(two, tmp_path / "q.coords", voxel_size=VOXEL)
    with pytest.raises(ValueError, match=r"p\.txt: unknown picks file type"):
        write_picks(picks, tmp_path / "p.txt")


# --- copick projects written by the copick library --------------------------------------

@pytest.fixture
def project(tmp_path, volume):
    """A copick filesystem project made with copick's own API: 2 runs, tomograms, picks."""
    config = tmp_path / "copick" / "config.json"
    root = copick.new_config(str(config), overlay_root=str(tmp_path / "copick" / "overlay"),
                             pickable_objects=[
                                 PickableObject(name="ribosome", is_particle=True, label=1,
                                                radius=150.0),
                                 PickableObject(name="apo-ferritin", is_particle=True, label=2,
                                                radius=60.0)])
    truth = []
    for i, name in enumerate(["TS_1", "TS_2"]):
        run = root.new_run(name)
        run.new_voxel_spacing(VOXEL).new_tomogram("wbp").from_numpy(volume)
        positions = np.random.default_rng(i).uniform(0, 1, (6, 3)) * (np.array(SHAPE[::-1]) - 1)
        positions *= VOXEL  # x, y, z in Angstrom
        transforms = np.tile(np.eye(4), (6, 1, 1))
        transforms[0, :3, 3] = [5.0, -3.0, 2.0]  # a refined shift: the centre moves by it
        run.new_picks("ribosome", session_id="0", user_id="curation").from_numpy(
            positions, transforms, scores=np.linspace(0.1, 0.6, 6))
        centres = positions + transforms[:, :3, 3]
        truth.append(pd.DataFrame({"experiment": name, "particle_type": "ribosome",
                                   "x": centres[:, 0], "y": centres[:, 1], "z": centres[:, 2]}))
    return config, pd.concat(truth, ignore_index=True)


def test_copick_project_opens_through_our_functions(project, volume):
    config, truth = project
    root = open_project(config)
    assert list_runs(root) == ["TS_1", "TS_2"]
    tomogram = read_copick_tomogram(root, "TS_2", VOXEL, "wbp", level=1)
    assert isinstance(tomogram.data, zarr.Array) and tomogram.name == "TS_2"
    assert tomogram.voxel_size == pytest.approx(2 * VOXEL)
    assert tomogram.shape == (20, 28, 36)
    copick_tomo = root.get_run("TS_2").get_voxel_spacing(VOXEL).get_tomograms("wbp")[0]
    np.testing.assert_array_equal(np.asarray(tomogram.data), copick_tomo.numpy("1"))
    np.testing.assert_array_equal(np.asarray(read_copick_tomogram(root, "TS_1", 13.48, "wbp").data),
                                  volume)
    assert tomogram_shapes(root, VOXEL, "wbp") == {"TS_1": SHAPE, "TS_2": SHAPE}
    picks = read_copick_picks(root, user_id="curation", session_id="0")
    same_positions(truth, picks)
    assert sorted(picks["score"]) == pytest.approx(sorted(np.tile(np.linspace(0.1, 0.6, 6), 2)))
    assert read_copick_picks(root, run="TS_1", object_names=["apo-ferritin"]).empty
    same_positions(truth, read_picks(config, user_id="curation"))


def test_copick_errors_are_clear(project):
    config, truth = project
    root = open_project(config)
    with pytest.raises(ValueError, match="no run 'TS_3'; runs: TS_1, TS_2"):
        read_copick_tomogram(root, "TS_3", VOXEL, "wbp")
    with pytest.raises(ValueError, match="no voxel spacing 10 A; available: 13.48"):
        read_copick_tomogram(root, "TS_1", 10.0, "wbp")
    with pytest.raises(ValueError, match="no 'denoised' tomogram; available: wbp"):
        read_copick_tomogram(root, "TS_1", VOXEL, "denoised")
    with pytest.raises(ValueError, match="not pickable objects"):
        write_copick_picks(root, truth.assign(particle_type="virus"), "me", "1")
    with pytest.raises(ValueError, match="characters copick does not allow"):
        write_copick_picks(root, truth, "my_name", "1")
    with pytest.raises(ValueError, match="runs TS_9 are not in the copick project"):
        write_copick_picks(root, truth.assign(experiment="TS_9"), "me", "1")


def test_picks_we_write_open_in_copick(project, tmp_path):
    config, truth = project
    ours = pd.concat([truth, truth.assign(particle_type="apo-ferritin", x=truth["x"] + 1.234)])
    ours["score"] = 0.75
    write_copick_picks(open_project(config), ours, user_id="semietpicker", session_id="7")
    root = copick.from_file(str(config))  # a fresh copick, nothing cached
    for (run, cls), rows in ours.groupby(["experiment", "particle_type"]):
        (picks,) = root.get_run(run).get_picks(object_name=cls, user_id="semietpicker",
                                               session_id="7")
        points, _ = picks.numpy()
        np.testing.assert_allclose(np.sort(points, axis=0),
                                   np.sort(rows[["x", "y", "z"]].to_numpy(), axis=0), atol=TOL)
        assert picks.scores().tolist() == pytest.approx([0.75] * len(rows))
    # writing again replaces the points of the (run, class) sets written; the rest stay
    write_picks(ours.iloc[:3], config, user_id="semietpicker", session_id="7")
    again = read_copick_picks(open_project(config), user_id="semietpicker")
    same_positions(again[(again["experiment"] == "TS_1") & (again["particle_type"] == "ribosome")],
                   ours.iloc[:3])
    assert len(again) == len(ours) - 6 + 3
    assert len(read_copick_picks(open_project(config), user_id="curation")) == len(truth)
    # a new run can be created on request
    write_copick_picks(open_project(config), truth.assign(experiment="TS_9"), "semietpicker",
                       "7", create_runs=True)
    assert "TS_9" in list_runs(copick.from_file(str(config)))


def test_single_copick_picks_file_is_copick_compatible(project, tmp_path):
    """A picks JSON from write_picks, dropped into a run's Picks folder, loads in copick."""
    config, truth = project
    rows = truth[truth["experiment"] == "TS_1"]
    overlay = json.loads(config.read_text())["overlay_root"].removeprefix("local://")
    path = tmp_path / "copick" / "overlay" / "ExperimentRuns" / "TS_1" / "Picks"
    assert str(path).startswith(overlay)
    write_picks(rows, path / "semietpicker_3_ribosome.json", session_id="3")
    (picks,) = copick.from_file(str(config)).get_run("TS_1").get_picks(user_id="semietpicker")
    np.testing.assert_allclose(picks.numpy()[0], rows[["x", "y", "z"]].to_numpy(), atol=TOL)
    # and the run comes from the folders when a file does not name it
    data = json.loads((path / "semietpicker_3_ribosome.json").read_text())
    data.pop("run_name")
    (path / "anon.json").write_text(json.dumps(data))
    same_positions(rows, read_picks(path / "anon.json"))


def test_copick_project_to_relion5_and_back(project, tmp_path):
    config, truth = project
    shapes = tomogram_shapes(open_project(config), VOXEL, "wbp")
    convert_picks(config, tmp_path / "all.star", voxel_size=VOXEL, shape=shapes,
                  user_id="curation", session_id="0")
    same_positions(truth, read_picks(tmp_path / "all.star", voxel_size=VOXEL, shape=shapes))


def test_cli_trains_and_picks_from_a_copick_project(project, tmp_path):
    from napari_semietpicker.classes import ParticleClass, save_classes
    from napari_semietpicker.cli import main
    from napari_semietpicker.model.checkpoint import load_card

    config, _ = project
    classes = tmp_path / "classes.json"
    save_classes([ParticleClass("ribosome", 150.0), ParticleClass("apo-ferritin", 60.0)], classes)
    source = ["--copick", str(config), "--tomo-type", "wbp", "--voxel-spacing", str(VOXEL)]
    model = tmp_path / "model"
    assert main(["-q", "train", *source, "--runs", "TS_1", "--user", "curation",
                 "--session", "0", "--classes", str(classes), "--out", str(model),
                 "--preset", "tiny", "--crop", "32", "--steps", "2", "--cotrain-steps", "0"]) == 0
    card = load_card(model)
    assert card.history["labelled"] == ["TS_1"] and card.voxel_size == pytest.approx(VOXEL)
    # pick every run of the project and write the picks back into it
    assert main(["-q", "predict", str(model), *source, "--out", str(config),
                 "--user", "semietpicker", "--session", "1", "--threshold", "0.05"]) == 0
    parts = sorted(p.stem for p in (tmp_path / "copick").glob("config.json.parts/*.csv"))
    assert parts == ["TS_1", "TS_2"]
    written = read_copick_picks(open_project(config), user_id="semietpicker", session_id="1")
    merged = pd.concat([pd.read_csv(tmp_path / "copick" / "config.json.parts" / f"{p}.csv")
                        for p in parts], ignore_index=True)
    assert len(written) == len(merged)

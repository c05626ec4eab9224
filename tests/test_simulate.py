"""Synthetic tomograms: determinism, geometry of the picks, image formation, files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import fft
from scipy.spatial.distance import pdist, squareform

from napari_semietpicker import simulate
from napari_semietpicker.classes import ParticleClass, load_classes
from napari_semietpicker.io.picks import positions_A, read_picks_csv
from napari_semietpicker.io.tomogram import read_tomogram

RADII = {c.name: c.radius_A for c in load_classes("czii")}
SHAPE = (40, 80, 96)  # non-cubic on purpose


@pytest.fixture(scope="module")
def clean():
    """A crowded noiseless tomogram without distractors (every particle is a pick)."""
    return simulate.simulate_tomogram(SHAPE, snr=np.inf, seed=7, density=15, distractors=0)


def test_same_seed_same_tomogram_other_seed_differs():
    first, picks = simulate.simulate_tomogram(SHAPE, seed=3, density=4)
    again, picks_again = simulate.simulate_tomogram(SHAPE, seed=3, density=4)
    other, picks_other = simulate.simulate_tomogram(SHAPE, seed=4, density=4)
    assert first.data.dtype == np.float32 and first.shape == SHAPE
    np.testing.assert_array_equal(first.data, again.data)
    assert picks.equals(picks_again)
    assert not np.allclose(first.data, other.data)
    assert not picks[["x", "y", "z"]].equals(picks_other[["x", "y", "z"]])


def test_picks_inside_the_volume_and_apart():
    tomogram, picks = simulate.simulate_tomogram(SHAPE, seed=11, density=8, distractors=1)
    assert len(picks) >= 10
    assert set(picks["experiment"]) == {"sim_000"}
    assert set(picks["particle_type"]) <= set(RADII)
    zyx = positions_A(picks)
    assert np.all(zyx >= 0) and np.all(zyx <= tomogram.extent_A)
    radii = picks["particle_type"].map(RADII).to_numpy()
    pairs = np.triu_indices(len(zyx), 1)
    sums = (radii[:, None] + radii[None, :])[pairs]
    assert np.all(squareform(pdist(zyx))[pairs] >= simulate.MIN_DISTANCE_FACTOR * sums - 1e-6)


def test_picks_sit_on_dark_density(clean):
    """Each pick's ball holds strong (mostly dark) signal; the background holds little."""
    tomogram, picks = clean
    assert len(picks) >= 8
    zyx = positions_A(picks)
    radii = picks["particle_type"].map(RADII).to_numpy()
    strengths, means = [], []
    for centre, radius in zip(zyx, radii, strict=True):
        ball = tomogram.data[simulate.particle_mask(SHAPE, 10.0, [centre], [radius])]
        strengths.append(np.abs(ball).mean())
        means.append(ball.mean())
    background = ~simulate.particle_mask(SHAPE, 10.0, zyx, radii + 60.0)
    assert background.sum() > 1000
    level = np.abs(tomogram.data[background]).mean()
    assert min(strengths) > 2 * level and np.median(strengths) > 4 * level
    assert np.mean(np.array(means) < 0) > 0.5  # protein is dark


@pytest.mark.parametrize("voxel_size", [10.0, 13.5, 6.0])
def test_render_keeps_centre_and_physical_size(voxel_size):
    """The centre of mass lands on the sub-voxel position; the size in A does not depend
    on the voxel size (radius of gyration of the 10 A map, 97 A for 6qzp)."""
    template = simulate._map_template("6qzp", voxel_size)
    side = int(500 / voxel_size)
    volume = np.zeros((side,) * 3, dtype=np.float32)
    centre = np.array([0.5 * side - 0.3, 0.5 * side + 0.4, 0.5 * side + 0.15])
    rotation = simulate._random_rotation(np.random.default_rng(0))
    simulate.render_particle(volume, template, centre, rotation, voxel_size)
    grids = np.indices(volume.shape)
    com = np.array([(g * volume).sum() / volume.sum() for g in grids])
    np.testing.assert_allclose(com, centre, atol=0.05)
    gyration_A = voxel_size * np.sqrt(
        sum(((g - c) ** 2 * volume).sum() for g, c in zip(grids, com, strict=True)) / volume.sum()
    )
    assert gyration_A == pytest.approx(97.0, rel=0.04)


def test_noise_matches_the_snr(clean):
    tomogram, picks = clean
    noisy, _ = simulate.simulate_tomogram(SHAPE, snr=0.25, seed=7, density=15, distractors=0)
    mask = simulate.particle_mask(SHAPE, 10.0, positions_A(picks),
                                  picks["particle_type"].map(RADII).to_numpy())
    assert np.var(tomogram.data[mask]) == pytest.approx(1.0, rel=1e-3)
    noise = noisy.data - tomogram.data
    assert np.var(noise) == pytest.approx(1 / 0.25, rel=0.01)
    assert abs(float(noise.mean())) < 0.01
    default, _ = simulate.simulate_tomogram((16, 24, 24), snr=None, seed=1)
    explicit, _ = simulate.simulate_tomogram((16, 24, 24), snr=simulate.DEFAULT_SNR, seed=1)
    np.testing.assert_array_equal(default.data, explicit.data)


def test_missing_wedge_is_empty_before_and_after_noise(clean):
    wedge = simulate.missing_wedge_mask(SHAPE)
    measured = np.broadcast_to(wedge, (SHAPE[0], SHAPE[1], SHAPE[2] // 2 + 1))
    noisy, _ = simulate.simulate_tomogram(SHAPE, snr=0.1, seed=7, density=15, distractors=0)
    for volume in (clean[0].data, noisy.data):
        power = np.abs(fft.rfftn(volume.astype(np.float64))) ** 2
        assert power[~measured].sum() < 1e-8 * power[measured].sum()
    # geometry (tilt axis y): the kz axis is missing, kx measured; kz/kx = 5/40 : 12/96 is
    # 45 deg from kx (measured), 5/40 : 4/96 is 72 deg (missing)
    assert not wedge[5, 0, 0] and wedge[0, 0, 5] and wedge[0, 0, 0]
    assert wedge[5, 0, 12] and wedge[-5, 0, 12]
    assert not wedge[5, 0, 4] and not wedge[-5, 0, 4]


def test_dataset_files_read_back(tmp_path):
    shape, voxel = (24, 36, 44), 13.5
    picks = simulate.simulate_dataset(tmp_path, n=2, shape=shape, voxel_size=voxel, snr=1.0,
                                      seed=5, density=40)
    assert len(picks) > 0
    for name in ("sim_000", "sim_001"):
        tomogram = read_tomogram(tmp_path / "tomograms" / f"{name}.mrc")
        assert tomogram.shape == shape and tomogram.name == name
        assert tomogram.voxel_size == pytest.approx(voxel)
        zyx = positions_A(picks[picks["experiment"] == name])
        assert np.all(zyx >= 0) and np.all(zyx <= tomogram.extent_A)
    on_disk = read_picks_csv(tmp_path / "picks.csv")
    np.testing.assert_allclose(positions_A(on_disk), positions_A(picks), atol=1e-3)
    assert list(on_disk["particle_type"]) == list(picks["particle_type"])
    # tomogram i depends on (seed, i) only, not on n
    alone = simulate.simulate_dataset(tmp_path / "one", n=1, shape=shape, voxel_size=voxel,
                                      snr=1.0, seed=5, density=40)
    np.testing.assert_array_equal(
        read_tomogram(tmp_path / "one" / "tomograms" / "sim_000.mrc").data,
        read_tomogram(tmp_path / "tomograms" / "sim_000.mrc").data,
    )
    assert alone.equals(picks[picks["experiment"] == "sim_000"].reset_index(drop=True))


def test_class_templates_fit_the_class_radii():
    for particle_class in load_classes("czii"):
        template = simulate.class_template(particle_class, 10.0)
        assert template.radius_A == pytest.approx(particle_class.radius_A, rel=0.25)


def test_the_package_ships_every_map_the_simulator_names():
    """The maps come from the package, not from a folder beside the checkout."""
    maps = simulate.template_maps()
    named = {*simulate.CLASS_TEMPLATES.values(), *simulate.DISTRACTOR_TEMPLATES}
    assert named <= set(maps)
    for stem in named:
        assert maps[stem].ndim == 3 and maps[stem].max() > 0
        assert not maps[stem].flags.writeable  # shared by the caches: nobody may edit it


def test_classes_without_a_map_get_synthetic_shapes():
    classes = [ParticleClass("mystery", 80.0), ParticleClass("ribosome", 150.0)]
    tomogram, picks = simulate.simulate_tomogram(SHAPE, classes=classes, snr=np.inf, seed=2,
                                                 density=8)
    assert set(picks["particle_type"]) <= {"mystery", "ribosome"} and len(picks) > 0
    assert np.isfinite(tomogram.data).all() and tomogram.data.std() > 0
    blob = simulate.class_template(classes[0], 10.0)
    assert blob.radius_A == pytest.approx(80.0, rel=0.3)


@pytest.mark.parametrize("kwargs", [
    {"shape": (0, 10, 10)}, {"shape": (10, 10)}, {"snr": 0.0}, {"voxel_size": -1.0},
    {"density": -1.0},
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        simulate.simulate_tomogram(**kwargs)

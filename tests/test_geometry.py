"""One coordinate convention (docs/coordinates.md), proven on every path picks take.

A stand-in network whose output is a known function of its input (the mean of each 2x2x2
block: exactly the stride-2 output grid of the convention) picks Gaussian particles at
known positions; whatever the shape, voxel size, binning, windows, flips, batch, input
format, entry point (CLI or dock) and export format, the picks must come back within half
a tomogram voxel of the truth, in the tomogram's own Angstrom.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from unittest import mock

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.cli import main
from napari_semietpicker.geometry import (
    Grid,
    bin_volume,
    output_to_input,
    plan_axis,
    resample,
    same_voxel_size,
)
from napari_semietpicker.inference.predict import PredictConfig, pick_tomogram, predict_heatmaps
from napari_semietpicker.io.formats import read_any_tomogram, read_picks, write_picks
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.io.tomogram import Tomogram, bin_tomogram, write_tomogram
from napari_semietpicker.io.zarr_io import read_zarr_tomogram, write_ome_zarr
from napari_semietpicker.model.checkpoint import WEIGHTS, ModelCard
from napari_semietpicker.model.heatmap import find_peaks, nms_kernels
from napari_semietpicker.model.network import ModelConfig
from napari_semietpicker.training.data import check_training_set, prepare_volume

STRIDE = 2


class PoolNet(torch.nn.Module):
    """Stand-in network: heat = mean of each 2x2x2 block (no sigmoid, so nothing saturates)."""

    class config:
        output_stride = STRIDE
        n_classes = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool3d(x, STRIDE)


def card_for(model_voxel: float, radius_A: float) -> ModelCard:
    return ModelCard([ParticleClass("blob", radius_A)], model_voxel, ModelConfig(1, "tiny"))


# -- the convention itself ----------------------------------------------------------------------

def test_coarser_grids_put_voxel_j_at_the_mean_of_its_fine_voxels():
    grid = Grid(10.0, (1.0, 2.0, 3.0))
    for factor in (2, 4, 1.37):
        coarse = grid.coarser(factor)
        assert coarse.voxel_size == pytest.approx(10.0 * factor)
        j = np.array([[0.0, 3.0, 7.5]])
        np.testing.assert_allclose(coarse.to_angstrom(j),
                                   grid.to_angstrom(output_to_input(j, factor)))
        np.testing.assert_allclose(coarse.to_index(coarse.to_angstrom(j)), j)
    # binned voxel j of f = 4 is the mean of full voxels 4j..4j+3, centred at 4j + 1.5
    assert Grid(10.0).coarser(4).offset_A == (15.0, 15.0, 15.0)


@pytest.mark.parametrize("factor", [2, 4, 1.37, 0.7])
def test_resampling_keeps_a_particle_centre_where_the_convention_says(factor):
    idx = np.indices((41, 38, 45)).astype(float)
    centre = np.array([17.3, 20.1, 22.7])
    volume = np.exp(-((idx - centre[:, None, None, None]) ** 2).sum(0) / (2 * 3.0**2))
    out = resample(volume.astype(np.float32), factor)
    weights = out.ravel() / out.sum()
    mean_index = (np.indices(out.shape).reshape(3, -1) * weights).sum(axis=1)
    np.testing.assert_allclose(output_to_input(mean_index, factor), centre, atol=2e-3)


def test_one_binning_function_is_the_plain_mean():
    volume = np.random.default_rng(0).normal(size=(21, 34, 45)).astype(np.float32)
    expected = volume[:20, :32, :44].reshape(5, 4, 8, 4, 11, 4).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(bin_volume(volume, 4), expected, atol=1e-6)
    binned = bin_tomogram(Tomogram(volume, 7.3, "t"), 2)
    assert binned.offset_A == pytest.approx((0.5 * 7.3,) * 3)


# -- issue item 1: window starts on whole output voxels -----------------------------------------

def test_window_starts_are_multiples_of_32_and_the_blend_equals_one_pass():
    side, starts = plan_axis(192, 64, 0.25)
    assert side == 64 and all(s % 32 == 0 for s in starts) and starts[-1] + side == 192
    volume = np.zeros((32, 32, 192), dtype=np.float32)
    volume[16, 16, 100] = 1.0  # a bright voxel at x = 100 lies in output voxel 50
    heat = predict_heatmaps(PoolNet(), volume, PredictConfig(window=64, overlap=0.25))
    whole = PoolNet()(torch.from_numpy(volume)[None, None])[0]
    torch.testing.assert_close(heat, whole, atol=1e-6, rtol=0)
    assert int(heat[0, 8, 8].argmax()) == 50


@pytest.mark.parametrize("length", [672, 768, 800, 1056])
def test_default_windows_start_on_multiples_of_32(length):
    side, starts = plan_axis(length, 256, 0.25)
    assert all(s % 32 == 0 for s in starts) and starts[-1] + side == length
    assert all(b - a <= side for a, b in zip(starts, starts[1:]))


# -- issue item 2: one convention for binned grids ----------------------------------------------

def _blob_volume(shape, voxel: float, centres_A, sigma_A: float, amplitude: float = 1.0,
                 pattern_factor: int | None = None) -> np.ndarray:
    """Gaussian particles at ``centres_A`` (z, y, x Angstrom, tomogram frame).

    With ``pattern_factor`` f, a +-1 background whose every 2x2x2 block of the f-binned grid
    sums to zero is added: it gives the volume contrast for normalisation (so that the
    particles are not clipped) and vanishes exactly in the stand-in network's output.
    """
    index = [np.arange(n) for n in shape]
    volume = np.zeros(shape, dtype=np.float64)
    for centre in np.atleast_2d(centres_A):
        axes = [np.exp(-((i * voxel - c) ** 2) / (2 * sigma_A**2)) for i, c in zip(index, centre)]
        volume += amplitude * (axes[0][:, None, None] * axes[1][None, :, None]
                               * axes[2][None, None, :])
    if pattern_factor:
        signs = []
        for i, n in zip(index, shape):
            j = i // pattern_factor  # index on the f-binned grid
            usable = 2 * ((n // pattern_factor - 2) // 2)  # whole pairs, clear of the far end
            sign = np.where(j % 2 == 0, 1.0, -1.0) * np.where((j // 4) % 2 == 0, 1.0, -1.0)
            signs.append(np.where(j < usable, sign, 0.0))
        volume += signs[0][:, None, None] * signs[1][None, :, None] * signs[2][None, None, :]
    return volume.astype(np.float32)


def test_a_binned_model_picks_the_same_place_on_binned_and_full_tomograms():
    voxel, factor = 10.0, 4
    shape = (84, 92, 100)
    truth = np.array([[421.0, 455.0, 517.0]])
    sigma = 1.5 * STRIDE * factor * voxel
    full = Tomogram(_blob_volume(shape, voxel, truth, sigma, 2.0, factor), voxel, "t")
    card = card_for(factor * voxel, 4 * sigma)
    on_full, _ = pick_tomogram(PoolNet(), card, full, PredictConfig(window=64))
    on_binned, _ = pick_tomogram(PoolNet(), card, bin_tomogram(full, factor),
                                 PredictConfig(window=64))
    for peaks in (on_binned, on_full):
        picks = peaks.at(0.3)
        assert len(picks) == 1
        assert np.linalg.norm(picks[["z", "y", "x"]].to_numpy()[0] - truth[0]) < 0.5 * voxel


def test_training_targets_of_a_binned_tomogram_sit_on_the_particle():
    voxel, factor = 10.0, 4
    tomogram = bin_tomogram(Tomogram(np.zeros((64, 64, 64), np.float32) + np.arange(64), voxel,
                                     "t"), factor)
    picks = picks_from_positions(np.array([[300.0, 155.0, 75.0]]), "t", "blob")
    volume = prepare_volume(tomogram, picks, [ParticleClass("blob", 60.0)])
    # 300 A = full index 30 = binned (30 + 0.5) / 4 - 0.5 = 7.125
    np.testing.assert_allclose(volume.positions[0], [7.125, 3.5, 1.5])


def test_zarr_levels_follow_the_translation_or_else_mean_binning(tmp_path):
    volume = np.random.default_rng(0).normal(size=(40, 48, 56)).astype(np.float32)
    write_ome_zarr(tmp_path / "t.zarr", volume, 7.3)
    level2 = read_zarr_tomogram(tmp_path / "t.zarr", level=2)
    assert level2.offset_A == pytest.approx((1.5 * 7.3,) * 3)
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="r+")
    meta = group.attrs["multiscales"]
    for dataset in meta[0]["datasets"]:  # as copick writes them: no translation
        dataset["coordinateTransformations"] = dataset["coordinateTransformations"][:1]
    meta[0]["datasets"][1]["coordinateTransformations"].append(
        {"type": "translation", "translation": [1.0, 2.0, 3.0]})
    group.attrs["multiscales"] = meta
    assert read_zarr_tomogram(tmp_path / "t.zarr", level=2).offset_A == pytest.approx(
        (1.5 * 7.3,) * 3)
    assert read_zarr_tomogram(tmp_path / "t.zarr", level=1).offset_A == pytest.approx(
        (1.0, 2.0, 3.0))


# -- issue item 3: picks in the tomogram's own Angstrom -----------------------------------------

def test_picks_use_the_tomogram_voxel_size_when_the_model_counts_it_the_same():
    voxel, model_voxel = 10.19, 10.0
    assert same_voxel_size(voxel, model_voxel)
    truth = np.array([[300.0, 410.0, 6119.0]])
    sigma = 1.5 * STRIDE * voxel
    tomogram = Tomogram(_blob_volume((64, 64, 640), voxel, truth, sigma, 2.0, 1), voxel, "t")
    peaks, _ = pick_tomogram(PoolNet(), card_for(model_voxel, 4 * sigma), tomogram,
                             PredictConfig(window=256))
    picks = peaks.at(0.3)
    assert len(picks) == 1 and picks.x[0] == pytest.approx(6119.0, abs=0.5 * voxel)


# -- issue item 4: the smaller ones ---------------------------------------------------------------

def test_nms_keeps_one_pick_for_two_maxima_40_A_apart_on_one_apoferritin():
    apo = ParticleClass("apo-ferritin", 60.0)
    heat = torch.zeros(20, 20, 20)
    heat[10, 10, 8], heat[10, 10, 10] = 0.9, 0.8  # 2 output voxels of 20 A: 40 A apart
    positions, _ = find_peaks(heat, nms_kernels([apo], 10.0, 2)[0], 0.1)
    assert len(positions) == 1


def test_one_voxel_size_rule_for_training_sets_and_copick_spacings():
    a = prepare_volume(Tomogram(np.random.default_rng(0).normal(size=(32,) * 3), 10.0, "a"),
                       picks_from_positions(np.array([[100.0] * 3]), "a", "blob"),
                       [ParticleClass("blob", 60.0)])
    b = prepare_volume(Tomogram(np.random.default_rng(1).normal(size=(32,) * 3), 10.15, "b"))
    assert check_training_set([a], [ParticleClass("blob", 60.0)], [b]) == 10.0
    assert same_voxel_size(10.012, 10.0) and not same_voxel_size(10.3, 10.0)


def _fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / WEIGHTS).write_bytes(b"stand-in")
    return path


def test_predict_writes_relion4_and_heatmaps_with_each_tomogram_own_geometry(tmp_path):
    card = card_for(10.0, 4 * 30.0)
    paths, truths = [], {}
    for name, voxel in (("a", 10.19), ("b", 10.0)):
        truth = np.array([[200.0, 250.0, 560.0]])
        write_tomogram(tmp_path / f"{name}.mrc",
                       _blob_volume((48, 56, 64), voxel, truth, 30.0, 2.0, 1), voxel)
        paths.append(str(tmp_path / f"{name}.mrc"))
        truths[name] = (truth, voxel)
    model_dir = _fake_model_dir(tmp_path / "model")
    with mock.patch("napari_semietpicker.pipeline.load_model", return_value=(PoolNet(), card)):
        assert main(["-q", "predict", str(model_dir), *paths, "--out", str(tmp_path / "p.star"),
                     "--format", "relion4", "--threshold", "0.3", "--window", "64",
                     "--heatmaps", str(tmp_path / "hm")]) == 0
    import starfile

    rows = starfile.read(tmp_path / "p.star")
    for name, (truth, voxel) in truths.items():
        own = rows[rows["rlnTomoName"].astype(str) == name]
        assert len(own) == 1  # pixels of this tomogram's own voxel size
        pixels = own[["rlnCoordinateZ", "rlnCoordinateY", "rlnCoordinateX"]].to_numpy(float)
        np.testing.assert_allclose(pixels * voxel, truth, atol=0.5 * voxel)
    for name, (_, voxel) in truths.items():
        with mrcfile.open(tmp_path / "hm" / f"{name}_blob.mrc") as mrc:
            # output voxel 0 covers tomogram voxels 0 and 1: centred at 0.5 voxel
            assert float(mrc.header.origin.x) == pytest.approx(0.5 * voxel)
            assert float(mrc.voxel_size.x) == pytest.approx(2 * voxel, rel=1e-5)


def test_train_reads_relion5_picks_with_each_tomogram_shape(tmp_path):
    voxel = 13.5
    volume = np.random.default_rng(0).normal(size=(40, 48, 56)).astype(np.float32)
    write_tomogram(tmp_path / "t.mrc", volume, voxel)
    picks = picks_from_positions(np.array([[200.0, 300.0, 400.0]]), "t", "ribosome")
    write_picks(picks, tmp_path / "p.star", shape_by_experiment={"t": (40, 48, 56)},
                voxel_size=voxel)
    seen = {}

    class Stop(Exception):
        pass

    def capture(tomogram, table=None, classes=()):
        seen["picks"] = table
        raise Stop

    with mock.patch("napari_semietpicker.pipeline.prepare_volume", side_effect=capture), \
            pytest.raises(Stop):
        main(["-q", "train", "--tomograms", str(tmp_path / "t.mrc"), "--picks",
              str(tmp_path / "p.star"), "--out", str(tmp_path / "m")])
    np.testing.assert_allclose(seen["picks"][["z", "y", "x"]].to_numpy(), [[200, 300, 400]],
                               atol=1e-4)


# -- the property: every path, every format -----------------------------------------------------

FORMATS = {"csv": ".csv", "copick": ".json", "relion4": ".star", "relion5": ".star",
           "coords": ".coords"}


@st.composite
def cases(draw):
    factor = draw(st.sampled_from([1, 2, 4]))
    voxel = draw(st.floats(7.3, 23.1))
    route = draw(st.sampled_from(["cli-mrc", "cli-zarr", "dock"]))
    read_binned = route != "dock" and factor > 1 and draw(st.booleans())
    # a model within the voxel-size rule of what it reads runs without resampling
    eps = draw(st.floats(-0.019, 0.019)) if factor == 1 or read_binned else 0.0
    sigma_vox = 1.5 * STRIDE * factor  # particle sigma in tomogram voxels: 1.5 output voxels
    shape = tuple(int(7 * sigma_vox) + draw(st.integers(0, 2 * factor + 1)) for _ in range(3))
    margin = 2.5 * sigma_vox
    centre = [draw(st.floats(margin, n - 1 - margin)) * voxel for n in shape]
    return dict(factor=factor, voxel=voxel, route=route, read_binned=read_binned, eps=eps,
                shape=shape, centre=np.array([centre]), sigma_A=sigma_vox * voxel,
                window=draw(st.sampled_from([32, 64])), overlap=draw(st.sampled_from([0.25, 0.5])),
                tta=draw(st.booleans()), batch=draw(st.sampled_from([1, 3])),
                keep_translation=draw(st.booleans()), format=draw(st.sampled_from(list(FORMATS))))


def _strip_translations(path: Path) -> None:
    group = zarr.open_group(str(path), mode="r+")
    meta = group.attrs["multiscales"]
    for dataset in meta[0]["datasets"]:
        dataset["coordinateTransformations"] = [
            t for t in dataset["coordinateTransformations"] if t["type"] != "translation"]
    group.attrs["multiscales"] = meta


def _pick(case: dict, folder: Path) -> tuple[pd.DataFrame, Tomogram]:
    """Picks of the case's tomogram through its route, written in its format and read back."""
    factor, voxel = case["factor"], case["voxel"]
    volume = _blob_volume(case["shape"], voxel, case["centre"], case["sigma_A"], 2.0, factor)
    level = int(math.log2(factor)) if case["read_binned"] else 0
    model_voxel = voxel * factor * (1 + case["eps"])
    card = card_for(model_voxel, 4 * case["sigma_A"])
    config = PredictConfig(window=case["window"], overlap=case["overlap"], tta=case["tta"],
                           batch_size=case["batch"])
    out = folder / f"t{FORMATS[case['format']]}"
    model_dir = _fake_model_dir(folder / "model")
    if case["route"] == "dock":
        from napari_semietpicker._qt.predict_job import run_prediction

        tomogram = Tomogram(volume, voxel, "t")
        with mock.patch("napari_semietpicker.pipeline.load_model",
                        return_value=(PoolNet(), card)):
            _, picked = run_prediction(model_dir, None, tomogram, config, "cpu",
                                       lambda done, total: None, lambda: False)
        write_picks(picked.peaks.at(0.3), out, format=case["format"], voxel_size=voxel,
                    shape_by_experiment=tomogram.shape)
    else:
        if case["route"] == "cli-mrc":
            path = folder / "t.mrc"
            write_tomogram(path, volume, voxel)
        else:
            path = folder / "t.zarr"
            write_ome_zarr(path, volume, voxel)
            if not case["keep_translation"]:
                _strip_translations(path)
        tomogram = read_any_tomogram(path, level=level)
        with mock.patch("napari_semietpicker.pipeline.load_model",
                        return_value=(PoolNet(), card)):
            args = ["-q", "predict", str(model_dir), str(path), "--out", str(out),
                    "--format", case["format"], "--threshold", "0.3", "--level", str(level),
                    "--window", str(case["window"]), "--overlap", str(case["overlap"]),
                    "--batch-size", str(case["batch"]), "--device", "cpu"]
            assert main(args + (["--tta"] if case["tta"] else ["--no-tta"])) == 0
    picks = read_picks(out, voxel_size=tomogram.voxel_size, shape=tomogram.shape,
                       particle_type="blob", tomogram_name="t")
    return picks, tomogram


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_picks_land_within_half_a_voxel_on_every_path(case):
    with tempfile.TemporaryDirectory() as tmp:
        picks, _ = _pick(case, Path(tmp))
    assert len(picks) == 1, picks
    error = np.linalg.norm(picks[["z", "y", "x"]].to_numpy()[0] - case["centre"][0])
    assert error <= 0.5 * case["voxel"], (error / case["voxel"], case)

"""Precision, threads and memory of prediction: bf16 agrees with fp32, no whole-volume copies."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.cli import main
from napari_semietpicker.compute import resolve_precision, use_available_cores
from napari_semietpicker.inference.predict import (
    PredictConfig,
    pick_tomogram,
    predict_heatmaps,
    read_window,
    reflect_index,
)
from napari_semietpicker.io.tomogram import normalize, write_tomogram
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import ModelCard, save_model
from napari_semietpicker.model.network import ModelConfig, build_model


def random_model(seed: int = 0) -> torch.nn.Module:
    """The tiny network with random weights and BatchNorm statistics, outputs spread
    around 0.5 (a head scaled up), where bf16 rounding shows most."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(n_classes=2, preset="tiny"))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.nn.init.zeros_(model.head.bias)
    model.head.weight.data *= 30
    return model.eval()


class MatchedFilter(torch.nn.Module):
    """A known-answer picker for the blob tomograms: a dark-Gaussian template (a
    convolution, so autocast runs it in bf16), pooled to stride 2, then a sigmoid that is
    high at blob centres (responses 26-54 here) and low in the noise (standard deviation 4)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.config = ModelConfig(n_classes=1, preset="tiny")
        r = np.arange(-6, 7, dtype=np.float32)
        d2 = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
        kernel = -np.exp(-d2 / (2 * sigma**2))
        self.conv = torch.nn.Conv3d(1, 1, 13, padding=6, bias=False)
        self.conv.weight.data = torch.from_numpy(kernel / np.linalg.norm(kernel))[None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((torch.nn.functional.avg_pool3d(self.conv(x), 2) - 20.0) / 2.0)


def test_precision_names_resolve_and_bad_ones_are_refused():
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"  # bf16 was not faster on CPUs
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        PredictConfig(precision="fp16")


def test_bf16_heatmaps_agree_with_fp32_and_come_back_as_float32():
    volume = normalize(np.random.default_rng(1).normal(size=(40, 60, 90)))
    model = random_model()
    fp32 = predict_heatmaps(model, volume, PredictConfig(window=64, precision="fp32"))
    bf16 = predict_heatmaps(model, volume, PredictConfig(window=64, precision="bf16"))
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape == (2, 20, 30, 45)
    assert fp32.std() > 0.01  # outputs vary, so agreement means something
    assert not torch.equal(bf16, fp32)  # bf16 did run
    torch.testing.assert_close(bf16, fp32, atol=0.01, rtol=0)
    assert (bf16 - fp32).abs().mean() < 0.002


def test_under_bf16_the_network_ends_in_float32():
    """The head and sigmoid run in float32: bfloat16's 2**-8 steps would flatten peak tops
    into plateaus of tied maxima."""
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 1, 32, 32, 64))).float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = random_model()(x)
    assert out.dtype == torch.float32
    assert not torch.equal(out, out.bfloat16().float())


def test_bf16_picks_the_same_particles_as_fp32(blobs):
    _, blob_tomogram = blobs
    tomogram, truth = blob_tomogram("blob_bf16", seed=5)
    blob = ParticleClass("blob", 50.0, 1.0, "#ffffff")  # both blob sizes as one class
    truth = truth.assign(particle_type="blob")
    model = MatchedFilter(sigma=3.0)
    card = ModelCard(classes=[blob], voxel_size=tomogram.voxel_size, model=model.config)
    picks = {}
    for precision in ("fp32", "bf16"):
        peaks, _ = pick_tomogram(model, card, tomogram, PredictConfig(window=64,
                                                                      precision=precision))
        picks[precision] = peaks.at(0.5).sort_values(["z", "y", "x"])
        assert evaluate(picks[precision], truth, [blob]).per_class["f1_0.5"][0] == 1.0
    assert len(picks["bf16"]) == len(picks["fp32"]) == len(truth)
    shift = picks["bf16"][["z", "y", "x"]].to_numpy() - picks["fp32"][["z", "y", "x"]].to_numpy()
    assert np.abs(shift).max() < 0.25 * tomogram.voxel_size


@pytest.mark.parametrize("length", [1, 2, 5, 9])
def test_reflect_index_is_numpy_reflect_padding(length):
    values = np.arange(length)
    for pad in range(0, 3 * length + 2):
        padded = np.pad(values, (0, pad), mode="reflect")
        index = reflect_index(torch.arange(length + pad), length).numpy()
        np.testing.assert_array_equal(values[index], padded)


def test_windows_past_the_end_read_the_padded_volume():
    volume = torch.from_numpy(np.random.default_rng(2).normal(size=(20, 30, 40)))
    padded = torch.from_numpy(np.pad(volume.numpy(), [(0, 12), (0, 2), (0, 24)], mode="reflect"))
    for start, side in [((0, 0, 0), (32, 32, 64)), ((10, 0, 8), (22, 32, 32)),
                        ((0, 5, 0), (8, 16, 16))]:
        window = read_window(volume, start, side)
        expected = padded[tuple(slice(s, s + n) for s, n in zip(start, side))]
        assert torch.equal(window, expected)


def test_windows_padded_by_more_than_an_axis_mirror_it_as_numpy_does():
    """Reflection from one slice (F.pad) and by index (pads as long as the axis) mixed."""
    volume = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 30, 5)))
    padded = torch.from_numpy(np.pad(volume.numpy(), [(0, 13), (0, 6), (0, 27)],
                                     mode="reflect"))
    for start, side in [((0, 20, 0), (16, 16, 32)), ((0, 24, 16), (8, 12, 16)),
                        ((0, 0, 0), (3, 36, 5))]:
        window = read_window(volume, start, side)
        expected = padded[tuple(slice(s, s + n) for s, n in zip(start, side))]
        assert torch.equal(window, expected)


def test_prediction_without_a_padded_copy_is_unchanged_and_copies_nothing_whole():
    """The volume is no longer padded whole before the first window: the heatmaps are
    bitwise those of the padded volume, and numpy allocates no volume-sized array."""
    # Large enough that a volume-sized array stands out from the model's inference copy.
    volume = normalize(np.random.default_rng(3).normal(size=(40, 90, 110)))
    model = random_model()
    config = PredictConfig(window=64, precision="fp32")
    padded = np.pad(volume, [(0, 24), (0, 6), (0, 18)], mode="reflect")
    expected = predict_heatmaps(model, padded, config)[:, :20, :45, :55]
    tracemalloc.start()
    heat = predict_heatmaps(model, volume, config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert torch.equal(heat, expected)
    assert peak < 0.5 * volume.nbytes  # the old np.pad made a 2.4x volume-sized copy


def test_normalize_in_place_gives_the_same_volume_without_a_copy():
    raw = np.random.default_rng(4).gamma(2.0, size=(30, 40, 50)).astype(np.float32)
    copied = normalize(raw)
    in_place = normalize(raw, copy=False)
    assert np.shares_memory(in_place, raw) and not np.shares_memory(copied, raw)
    np.testing.assert_array_equal(in_place, copied)
    raw[3, 4, 5] = np.inf
    with pytest.raises(ValueError, match="v: contains NaN or infinite"):
        normalize(raw, name="v")


def test_threads_follow_the_cores_shared_between_local_ranks(monkeypatch):
    before = torch.get_num_threads()
    try:
        cores = use_available_cores()
        assert cores == torch.get_num_threads() >= 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))
        assert use_available_cores() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_predict_takes_a_precision_and_refuses_unknown_ones(tmp_path, capsys, blobs):
    blob_classes, blob_tomogram = blobs
    tomogram, _ = blob_tomogram("blob_cli", seed=6, shape=(32, 64, 64))
    write_tomogram(tmp_path / "blob_cli.mrc", tomogram.data, tomogram.voxel_size)
    config = ModelConfig(n_classes=2, preset="tiny")
    save_model(tmp_path / "model", random_model(),
               ModelCard(classes=blob_classes, voxel_size=10.0, model=config))
    args = ["-q", "predict", str(tmp_path / "model"), str(tmp_path / "blob_cli.mrc"),
            "--window", "64", "--device", "cpu", "--threshold", "0.5"]
    assert main([*args, "--out", str(tmp_path / "bf16.csv"), "--precision", "bf16"]) == 0
    assert (tmp_path / "bf16.csv").is_file()
    assert main([*args, "--out", str(tmp_path / "x.csv"), "--precision", "fp16"]) == 2
    assert "unknown precision 'fp16'" in capsys.readouterr().err

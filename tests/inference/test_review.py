"""The review queue (uncertainty per pick, uncovered regions, decisions) and hard negatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.geometry import Grid, input_to_output
from napari_semietpicker.inference.predict import (
    PredictConfig,
    peaks_from_heatmaps,
    predict_heatmaps_with_spread,
)
from napari_semietpicker.inference.review import (
    ACCEPT,
    CHANGE_CLASS,
    MOVE,
    REJECT,
    Review,
    box_mean,
    build_queue,
    labels_after_review,
    load_decisions,
)
from napari_semietpicker.io.picks import picks_from_positions, read_picks_csv
from napari_semietpicker.io.tomogram import Tomogram
from napari_semietpicker.model.checkpoint import ModelCard
from napari_semietpicker.model.network import ModelConfig
from napari_semietpicker.model.views import predict_views_with_spread
from napari_semietpicker.training.data import CropSampler, prepare_volume

VOXEL, STRIDE = 10.0, 2
CLASSES = [ParticleClass("a", 80.0, 1.0), ParticleClass("b", 80.0, 1.0)]  # sigma: 2 out voxels
THRESHOLDS = {"a": 0.4, "b": 0.4}
GRID = Grid(VOXEL).coarser(STRIDE)  # the heatmaps' grid


def gaussian(shape, center, sigma, amplitude):
    grid = np.indices(shape, dtype=float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    return amplitude * np.exp(-d2 / (2 * sigma**2))


@pytest.fixture
def heat():
    """Class a: confident 0.9, near-threshold 0.43, 0.7 with a b peak (0.63) one voxel away,
    and a broad low smear (0.15, sigma 4) that is no candidate but holds a peak's mass."""
    shape = (32, 32, 32)
    a = np.maximum.reduce([gaussian(shape, (8, 8, 8), 2, 0.9),
                           gaussian(shape, (8, 8, 24), 2, 0.43),
                           gaussian(shape, (24, 24, 8), 2, 0.7),
                           gaussian(shape, (24, 24, 24), 4, 0.15)])
    b = gaussian(shape, (24, 24, 9), 2, 0.63)
    return torch.from_numpy(np.stack([a, b]).astype(np.float32))


def card() -> ModelCard:
    return ModelCard(classes=CLASSES, voxel_size=VOXEL, model=ModelConfig(n_classes=2,
                                                                        preset="tiny"))


def angstrom(out_index):
    return (np.asarray(out_index, float) + 0.5) * STRIDE - 0.5


def test_queue_ranks_confusion_then_threshold_then_uncovered(heat):
    peaks = peaks_from_heatmaps(heat, card(), "t").picks
    queue = build_queue(peaks, CLASSES, THRESHOLDS, heat, GRID)
    got = [(row.particle_type, row.kind, round(row.score, 2)) for row in queue.itertuples()]
    # b's peak 0.63 has a stronger a peak within a radius (ratio 1); a's 0.7 has b at 0.9 of
    # it; 0.43 is 0.85 of the way to the threshold; the smear is uncovered; 0.9 is sure.
    assert got[:3] == [("b", "peak", 0.63), ("a", "peak", 0.7), ("a", "peak", 0.43)]
    assert queue["priority"].iloc[:3].tolist() == pytest.approx([1.0, 0.9, 0.85], abs=1e-3)
    assert "also a 0.70" in queue["reason"].iloc[0]
    assert "near threshold 0.40" in queue["reason"].iloc[2]
    uncovered = queue[queue["kind"] == "uncovered"]
    assert len(uncovered) == 1 and uncovered["particle_type"].iloc[0] == "a"
    np.testing.assert_allclose(uncovered[["z", "y", "x"]].to_numpy()[0],
                               angstrom((24, 24, 24)) * VOXEL)
    # a binned tomogram's heatmaps start half a fine voxel in: the region moves with them
    shifted = build_queue(peaks, CLASSES, THRESHOLDS, heat, Grid(VOXEL, (5.0, 5.0, 5.0))
                          .coarser(STRIDE))
    np.testing.assert_allclose(shifted[shifted["kind"] == "uncovered"][["z", "y", "x"]]
                               .to_numpy()[0], angstrom((24, 24, 24)) * VOXEL + 5.0)
    assert uncovered["peak"].iloc[0] == -1 and "uncovered" in uncovered["reason"].iloc[0]
    assert got[-1] == ("a", "peak", 0.9) and queue["priority"].iloc[-1] == 0
    assert queue["item"].tolist() == list(range(len(queue)))
    short = build_queue(peaks, CLASSES, THRESHOLDS, heat, GRID, max_items=2)
    assert short["score"].tolist() == queue["score"].iloc[:2].tolist()


def test_box_mean_is_the_cube_average():
    grid = torch.rand(20, 31, 27, generator=torch.Generator().manual_seed(0))
    cube = torch.nn.functional.avg_pool3d(grid[None, None], 7, stride=1, padding=3)[0, 0]
    torch.testing.assert_close(box_mean(grid, 3), cube, atol=1e-5, rtol=0)


def test_no_candidates_make_an_empty_queue(heat):
    peaks = peaks_from_heatmaps(heat * 0, card(), "t").picks
    queue = build_queue(peaks, CLASSES, THRESHOLDS, heat * 0, GRID)
    assert len(queue) == 0 and Review(queue).progress() == "0 of 0 reviewed"


def test_flip_view_spread_is_their_standard_deviation():
    class Ramp(torch.nn.Module):
        """Output = a ramp along z: flipping z changes it, flipping y or x does not."""

        class config:
            output_stride = 2
            n_classes = 1

        def forward(self, x):
            pooled = torch.nn.functional.avg_pool3d(x, 2)
            ramp = torch.linspace(0, 1, pooled.shape[2])[None, None, :, None, None]
            return pooled * ramp

    volume = np.ones((32, 32, 32), np.float32)
    mean, spread = predict_views_with_spread(Ramp(), torch.from_numpy(volume)[None, None])
    ramp = np.linspace(0, 1, 16)
    views = np.stack([ramp, ramp[::-1], ramp, ramp])  # z flip, then y and x flips
    np.testing.assert_allclose(mean[0, 0, :, 0, 0], views.mean(0), atol=1e-6)
    np.testing.assert_allclose(spread[0, 0, :, 0, 0], views.std(0), atol=1e-6)
    heat, blended = predict_heatmaps_with_spread(Ramp(), volume, PredictConfig(window=32,
                                                                                 tta=True))
    np.testing.assert_allclose(blended[0, :, 0, 0], views.std(0), atol=1e-5)
    one_view = PredictConfig(window=32, tta=False)
    assert predict_heatmaps_with_spread(Ramp(), volume, one_view)[1] is None
    # The peaks carry the spread at their voxel, so review needs no second pass.
    one = ModelCard(classes=[ParticleClass("a", 80.0)], voxel_size=VOXEL,
                    model=ModelConfig(n_classes=1, preset="tiny"))
    peaks = peaks_from_heatmaps(heat, one, "t", spread=blended).picks
    assert len(peaks) and peaks["view_spread"].iloc[0] == pytest.approx(
        float(views.std(0)[-1]), abs=1e-5)


def test_view_disagreement_raises_a_confident_pick(heat):
    peaks = peaks_from_heatmaps(heat, card(), "t").picks
    peaks["view_spread"] = np.where(peaks["score"] > 0.85, 0.45, 0.0)  # the 0.9 peak wobbles
    queue = build_queue(peaks, CLASSES, THRESHOLDS)
    # Without the spread it came last (priority 0); now it follows the three uncertain ones.
    sure = queue.iloc[3]
    assert sure["score"] == pytest.approx(0.9, abs=0.01)
    assert sure["priority"] == pytest.approx(0.5)
    assert sure["reason"].startswith("flip views disagree (sd 0.45)")


def test_decisions_survive_a_restart_and_become_labels(heat, tmp_path):
    peaks = peaks_from_heatmaps(heat, card(), "t").picks
    queue = build_queue(peaks, CLASSES, THRESHOLDS, heat, GRID)
    review = Review(queue)
    review.decide(0, REJECT)  # b 0.63: not a particle
    review.decide(1, CHANGE_CLASS, "b")  # a 0.7 is really b
    review.decide(2, ACCEPT)  # a 0.43 (below the threshold): a particle
    moved = queue[["z", "y", "x"]].to_numpy()[3] + 15
    review.decide(3, MOVE, zyx=moved)  # the uncovered smear: a particle, a bit off
    assert review.progress() == f"4 of {len(queue)} reviewed"
    path = tmp_path / "t.review.csv"
    review.save(path)
    # The file is a picks table with roles: the CLI trains on it as it is.
    picks = read_picks_csv(path)
    assert picks["role"].tolist() == ["negative", "positive", "positive", "positive"]
    assert picks["particle_type"].tolist() == ["b", "b", "a", "a"]
    again = Review(build_queue(peaks, CLASSES, THRESHOLDS, heat, GRID))
    assert again.restore(path) == 4
    assert {i: d.action for i, d in again.decisions.items()} == {
        0: REJECT, 1: CHANGE_CLASS, 2: ACCEPT, 3: MOVE}
    np.testing.assert_allclose(again.decisions[3].zyx, moved, atol=1e-3)
    peaks["peak"] = np.arange(len(peaks))
    shown = peaks[peaks["score"] >= 0.4]  # the picks at the thresholds, with their peak ids
    labels = labels_after_review(shown, again)
    positives = labels[labels["role"] == "positive"]
    # Above threshold and undecided: only a's 0.9; decided: b (was a 0.7), a 0.43, moved a.
    assert sorted(positives["particle_type"]) == ["a", "a", "a", "b"]
    assert (labels["role"] == "negative").sum() == 1
    assert len(labels[(labels["particle_type"] == "a") & (labels["score"] > 0.65)
                      & (labels["score"] < 0.75)]) == 0  # the re-classed pick left class a


def test_unreadable_decisions_name_the_file(tmp_path):
    path = tmp_path / "bad.review.csv"
    path.write_text("experiment,particle_type,x,y,z\nt,a,1,2,3\n")
    with pytest.raises(ValueError, match=f"{path}: not a review decisions file"):
        load_decisions(path)
    assert load_decisions(tmp_path / "none.csv") is None


def test_a_bad_role_is_refused_with_the_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("experiment,particle_type,x,y,z,role\nt,a,1,2,3,positive\nt,a,1,2,3,maybe\n")
    with pytest.raises(ValueError, match="column 'role' has 'maybe' in data row 2"):
        read_picks_csv(path)


def test_hard_negatives_are_sampled_with_zero_target():
    classes = [ParticleClass("a", 40.0)]
    tomogram = Tomogram(np.zeros((64, 64, 64), np.float32) + np.arange(64)[:, None, None],
                        VOXEL, "t")
    positive = np.array([[10.0, 10.0, 10.0]]) * VOXEL
    negative = np.array([[50.0, 50.0, 50.0]]) * VOXEL
    picks = pd.concat([picks_from_positions(positive, "t", "a"),
                       picks_from_positions(negative, "t", "a")], ignore_index=True)
    picks["role"] = ["positive", "negative"]
    volume = prepare_volume(tomogram, picks, classes)
    np.testing.assert_allclose(volume.positions, [[10, 10, 10]])
    np.testing.assert_allclose(volume.negatives, [[50, 50, 50]])
    plain = prepare_volume(tomogram, picks.iloc[:1], classes)
    assert plain.negatives is None

    def crops(vol, n=60):
        sampler = CropSampler([vol], (16, 16, 16), classes, STRIDE, positive_fraction=0.3,
                              negative_fraction=1.0)
        generator = torch.Generator().manual_seed(0)
        out = []
        for _ in range(n):
            origin = sampler._origin(vol, generator)
            out.append((origin, sampler._target(vol, origin)))
        return out

    with_negative = crops(volume)
    holds = [(o, t) for o, t in with_negative if np.all((50 >= o) & (50 < o + 16))]
    without = [o for o, _ in crops(plain) if np.all((50 >= o) & (50 < o + 16))]
    # Nearly every crop that is not around the positive is around the negative now...
    assert len(holds) > 0.5 * len(with_negative) and len(without) < 0.1 * len(with_negative)
    for origin, target in holds:  # ... and its target is zero there (the positive is far)
        local = input_to_output(np.array([50.0, 50.0, 50.0]) - origin, STRIDE)
        index = tuple(np.clip(np.rint(local).astype(int), 0, 7))
        assert target[(0, *index)] == 0.0 and target.max() == 0.0


def test_roles_survive_a_points_layer_round_trip():
    """A picks table with negatives (an autosave, a reviewed file) read into a layer and
    back keeps them negative: they never turn into positives."""
    from napari_semietpicker.layers import picks_from_layer, points_layer

    picks = picks_from_positions(np.array([[10.0, 20, 30], [40, 50, 60]]), "t", "a")
    picks["role"] = ["positive", "negative"]
    data, attrs, _ = points_layer(picks, CLASSES[0], "t")
    back = picks_from_layer(data, attrs["metadata"], attrs["features"])
    assert back["role"].tolist() == ["positive", "negative"]

"""Thresholds chosen on labelled data: known answers on synthetic scored picks."""

import numpy as np
import pandas as pd
import pytest

from napari_semietpicker.classes import ParticleClass
from napari_semietpicker.inference.predict import PEAK_FLOOR
from napari_semietpicker.inference.thresholds import choose_thresholds, class_curve
from napari_semietpicker.io.picks import picks_from_positions
from napari_semietpicker.metrics import evaluate
from napari_semietpicker.model.checkpoint import load_card
from napari_semietpicker.training.config import TrainConfig
from napari_semietpicker.training.data import prepare_volume
from napari_semietpicker.training.loop import Trainer

CLS = ParticleClass("p", 100.0, 1.0)


def scored_run(run: str, hit_scores, miss_scores, n_unfound: int = 0, seed: int = 0):
    """References on a grid; one prediction 10 A off each of the first len(hit_scores),
    misses far from every reference. Returns (candidates, references)."""
    rng = np.random.default_rng(seed)
    n_ref = len(hit_scores) + n_unfound
    refs = np.array([[500.0, 500.0 + 1000 * i, 500.0] for i in range(n_ref)])
    hits = refs[:len(hit_scores)] + [10.0, 0.0, 0.0]
    misses = np.array([[5000.0, 500.0 + 1000 * i, 5000.0] for i in range(len(miss_scores))])
    pred = np.concatenate([hits, misses.reshape(-1, 3)])
    scores = np.concatenate([hit_scores, miss_scores]).astype(float)
    order = rng.permutation(len(pred))
    return (picks_from_positions(pred[order], run, "p", scores[order]),
            picks_from_positions(refs, run, "p"))


def test_threshold_separating_hits_from_misses_is_chosen():
    cand, ref = scored_run("a", [0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4])
    for beta in (1.0, 4.0):
        assert choose_thresholds(cand, ref, [CLS], beta)["p"] == pytest.approx(0.5)


def test_beta_4_keeps_a_faint_hit_that_f1_drops():
    # 9 hits at 0.9, one at 0.2, two misses at 0.3. F1 is best above 0.3 (0.947 against
    # 0.909 with everything); F-beta4 keeps everything (0.988 against 0.905).
    cand, ref = scored_run("a", [0.9] * 9 + [0.2], [0.3, 0.3])
    assert choose_thresholds(cand, ref, [CLS], 1.0)["p"] == pytest.approx(0.6)
    assert choose_thresholds(cand, ref, [CLS], 4.0, floor=0.05)["p"] == pytest.approx(0.125)


def test_thresholds_are_cross_validated_between_tomograms():
    # Alone, run a's best is 0.5 and run b's 0.75: each fold picks on the other run,
    # and the median of the two folds is kept.
    a = scored_run("a", [0.6, 0.7, 0.8, 0.9], [0.1, 0.4])
    b = scored_run("b", [0.8, 0.85, 0.9], [0.5, 0.7], seed=1)
    cand = pd.concat([a[0], b[0]], ignore_index=True)
    ref = pd.concat([a[1], b[1]], ignore_index=True)
    assert choose_thresholds(cand, ref, [CLS], 1.0)["p"] == pytest.approx(0.625)


def test_curve_counts_agree_with_the_metric():
    rng = np.random.default_rng(3)
    refs = rng.uniform(0, 3000, (30, 3))
    pred = np.concatenate([refs[:20] + rng.normal(0, 40, (20, 3)), rng.uniform(0, 3000, (25, 3))])
    scores = rng.uniform(0, 1, len(pred))
    curve = class_curve([(pred, scores, refs)], 50.0)
    reference = picks_from_positions(refs, "r", "p")
    for i in range(0, len(curve.thresholds), 7):
        kept = scores >= curve.thresholds[i]
        row = evaluate(picks_from_positions(pred[kept], "r", "p"), reference,
                       [CLS]).per_class.iloc[0]
        assert (curve.tp[i], curve.n_pred[i]) == (row["tp_0.5"], row["n_pred"])


def test_training_stores_thresholds_chosen_on_its_labels(blob_set, tmp_path):
    classes = blob_set["classes"]
    labelled = [prepare_volume(t, blob_set["picks"], classes) for t in blob_set["tomograms"][:2]]
    config = TrainConfig(steps=2, preset="tiny", crop=64, batch_size=2, checkpoint_every=1000)
    Trainer(config, classes, labelled, tmp_path).run()
    card = load_card(tmp_path)
    assert set(card.thresholds) == {"big", "small"}
    assert all(PEAK_FLOOR <= v <= 1.0 for v in card.thresholds.values())
    assert card.history["thresholds_chosen_on"] == [v.name for v in labelled]


def test_false_positives_on_a_labelled_tomogram_without_particles_count():
    # run a: hits 0.6-0.9, misses <= 0.4 (best 0.5); run b has no particles but a miss at
    # 0.7: counted, the threshold must rise above it (between 0.7 and the hit at 0.8).
    cand_a, ref = scored_run("a", [0.6, 0.8, 0.9], [0.1, 0.4])
    cand_b = picks_from_positions(np.array([[100.0, 100.0, 100.0]]), "b", "p", [0.7])
    cand = pd.concat([cand_a, cand_b], ignore_index=True)
    assert choose_thresholds(cand, ref, [CLS], 1.0)["p"] == pytest.approx(0.5)
    # Folds: chosen on b alone (no particle) says nothing and is skipped; chosen on a: 0.5.
    assert choose_thresholds(cand, ref, [CLS], 1.0, runs=["a", "b"])["p"] == pytest.approx(0.5)
    # With three runs b is pooled with c: its false positive at 0.7 counts, but keeping the
    # hit at 0.6 still pays.
    cand_c, ref_c = scored_run("c", [0.6, 0.8, 0.9], [0.1, 0.4], seed=2)
    cand = pd.concat([cand, cand_c], ignore_index=True)
    ref = pd.concat([ref, ref_c], ignore_index=True)
    assert choose_thresholds(cand, ref, [CLS], 1.0, runs=["a", "b", "c"])["p"] == pytest.approx(
        0.5)
    no_particles = ParticleClass("q", 100.0, 1.0)
    assert choose_thresholds(cand, ref, [no_particles], runs=["a", "b"])["q"] == 1.0

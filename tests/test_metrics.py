"""Tests of the picking metrics; expected values are worked out by hand in the comments.

Hit distance = factor x radius. Most tests use a class of radius 60 A, so a hit lies
within 30 A at 0.5 r and within 45 A at 0.75 r.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_semietpicker.classes import ParticleClass, load_classes
from napari_semietpicker.metrics import (
    Evaluation,
    chance_level,
    count_hits,
    evaluate,
    match_picks,
    precision_recall_fbeta,
    random_picks_baseline,
)

A = ParticleClass("a", 60.0, 1.0)
B = ParticleClass("b", 60.0, 1.0)


def picks(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """A picks table from (experiment, particle_type, z, y, x) rows (Angstrom)."""
    return pd.DataFrame(
        [{"experiment": e, "particle_type": t, "x": x, "y": y, "z": z} for e, t, z, y, x in rows],
        columns=["experiment", "particle_type", "x", "y", "z"],
    )


def row(ev: Evaluation, name: str) -> pd.Series:
    return ev.per_class.set_index("particle_type").loc[name]


def test_perfect_prediction_scores_one_everywhere() -> None:
    classes = load_classes("czii")
    rng = np.random.default_rng(0)
    rows = []
    for run in ("TS_1", "TS_2"):
        for c in classes:
            for zyx in rng.uniform(0, 6000, size=(5, 3)):
                rows.append((run, c.name, *zyx))
    ref = picks(rows)
    ev = evaluate(ref.copy(), ref, classes)
    assert ev.score == pytest.approx(1.0)
    for f in (0.5, 0.75):
        assert ev.mean_f1[f] == pytest.approx(1.0)
        assert ev.micro_f1[f] == pytest.approx(1.0)
        for col in ("precision", "recall", "f1"):
            assert np.allclose(ev.per_class[f"{col}_{f:g}"], 1.0)
        assert (ev.per_class[f"fp_{f:g}"] == 0).all() and (ev.per_class[f"fn_{f:g}"] == 0).all()
    assert np.allclose(ev.per_class["fbeta"], 1.0)
    assert (ev.per_class["tp_0.5"] == 10).all()  # 5 per run x 2 runs, each class


def test_two_predictions_on_one_particle_give_one_tp_one_fp() -> None:
    # Both predictions lie within 30 A of the one reference: the reference counts once.
    ref = picks([("r", "a", 100, 100, 100)])
    pred = picks([("r", "a", 100, 100, 100), ("r", "a", 110, 100, 100)])
    ev = evaluate(pred, ref, [A])
    r = row(ev, "a")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (1, 1, 0)
    # P = 1/2, R = 1, F1 = 2 * 0.5 / 1.5 = 2/3; F4 = 17 * 0.5 / (16 * 0.5 + 1) = 8.5 / 9
    assert r["precision_0.5"] == pytest.approx(0.5)
    assert r["recall_0.5"] == pytest.approx(1.0)
    assert r["f1_0.5"] == pytest.approx(2 / 3)
    assert r["fbeta"] == pytest.approx(8.5 / 9)
    pred_hit, ref_hit = match_picks(
        np.array([[100.0, 100, 100], [110, 100, 100]]), np.array([[100.0, 100, 100]]), 30.0
    )
    assert pred_hit.tolist() == [True, True] and ref_hit.tolist() == [True]


def test_one_prediction_between_two_particles_follows_official_metric() -> None:
    # References 40 A apart; the prediction halfway is 20 A <= 30 A from both, so it hits
    # both. The official CZII code counts distinct references hit: TP = 2, FP = 1 - 2 = -1,
    # FN = 0, hence P = 2 / (2 - 1) = 2 and F1 = 2 * 2 * 1 / 3 = 4/3. We keep that (so our
    # score equals Kaggle's) and warn: two references of one class closer than twice the
    # hit distance means overlapping particles, i.e. suspect reference picks.
    ref = picks([("r", "a", 100, 100, 100), ("r", "a", 100, 100, 140)])
    pred = picks([("r", "a", 100, 100, 120)])
    with pytest.warns(UserWarning, match="several references"):
        ev = evaluate(pred, ref, [A])
    r = row(ev, "a")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (2, -1, 0)
    assert r["precision_0.5"] == pytest.approx(2.0)
    assert r["f1_0.5"] == pytest.approx(4 / 3)
    pred_hit, ref_hit = match_picks(
        np.array([[100.0, 100, 120]]), np.array([[100.0, 100, 100], [100, 100, 140]]), 30.0
    )
    assert pred_hit.tolist() == [True] and ref_hit.tolist() == [True, True]


def test_hit_exactly_at_threshold_counts_and_a_hair_beyond_does_not() -> None:
    # Offset (18, 24, 0) = (3, 4, 0) * 6 has length exactly 30 = 0.5 * 60, but from these
    # coordinates float arithmetic gives 30 + 3.6e-13: a plain `d <= 30` would miss it.
    ref_zyx = np.array([[1263.5, 4082.1, 1673.0]])
    offset = np.array([18.0, 24.0, 0.0])
    at = ref_zyx + offset
    assert np.linalg.norm(at - ref_zyx) > 30.0  # the rounding this test is about
    assert count_hits(at, ref_zyx, 30.0) == (1, 0, 0)
    beyond = ref_zyx + offset * (1 + 1e-6)  # 30.00003 A
    assert count_hits(beyond, ref_zyx, 30.0) == (0, 1, 1)
    pred_hit, ref_hit = match_picks(beyond, ref_zyx, 30.0)
    assert not pred_hit.any() and not ref_hit.any()

    ref = picks([("r", "a", *ref_zyx[0])])
    assert row(evaluate(picks([("r", "a", *at[0])]), ref, [A]), "a")["tp_0.5"] == 1
    r = row(evaluate(picks([("r", "a", *beyond[0])]), ref, [A]), "a")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (0, 1, 1)
    assert r["tp_0.75"] == 1  # 30.00003 A <= 45 A


def test_empty_class_is_zero_keeps_its_weight_and_is_left_out_of_means() -> None:
    # Class a perfect, class b has no picks at all: b's TP = FP = FN = 0, so P = R = F = 0
    # (official: 0 where the denominator is 0). The official score divides by the sum of all
    # weights, so score = (1 * 1 + 1 * 0) / 2 = 0.5; the macro F1 counts only a (1.0).
    ref = picks([("r", "a", 100, 100, 100)])
    ev = evaluate(ref.copy(), ref, [A, B])
    b = row(ev, "b")
    assert (b["n_pred"], b["n_ref"], b["tp_0.5"], b["fp_0.5"], b["fn_0.5"]) == (0, 0, 0, 0, 0)
    assert (b["precision_0.5"], b["recall_0.5"], b["f1_0.5"], b["fbeta"]) == (0, 0, 0, 0)
    assert ev.score == pytest.approx(0.5)
    assert ev.mean_f1[0.5] == pytest.approx(1.0)
    assert ev.micro_f1[0.5] == pytest.approx(1.0)
    assert len(ev.per_run) == 1  # no row for a (run, class) with no picks


def test_runs_only_in_predictions_or_references_count() -> None:
    # r1: 1 reference hit; r2 (no references): 2 predictions -> FP; r3 (no predictions):
    # 1 reference -> FN. TP = 1, FP = 2, FN = 1: P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    ref = picks([("r1", "a", 100, 100, 100), ("r3", "a", 100, 100, 100)])
    pred = picks([("r1", "a", 100, 100, 100), ("r2", "a", 0, 0, 0), ("r2", "a", 500, 0, 0)])
    ev = evaluate(pred, ref, [A])
    r = row(ev, "a")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (1, 2, 1)
    assert r["f1_0.5"] == pytest.approx(0.4)
    assert ev.experiments == ["r1", "r2", "r3"]
    # Kaggle behaviour: predictions in runs without references are dropped -> FP = 0,
    # P = 1, R = 1/2, F1 = 2/3.
    ev = evaluate(pred, ref, [A], only_reference_runs=True)
    r = row(ev, "a")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (1, 0, 1)
    assert r["f1_0.5"] == pytest.approx(2 / 3)


def test_counts_are_summed_over_runs_not_averaged() -> None:
    # Run 1: 1 reference, 1 hit -> TP 1, FP 0, FN 0 (F1 = 1).
    # Run 2: 3 references, one hit and one far prediction -> TP 1, FP 1, FN 2
    #        (P = 1/2, R = 1/3, F1 = 0.4). Mean of per-run F1 = 0.7.
    # Sums: TP 2, FP 1, FN 2 -> P = 2/3, R = 1/2, F1 = (2/3) / (7/6) = 4/7.
    ref = picks(
        [
            ("r1", "a", 100, 100, 100),
            ("r2", "a", 100, 100, 100),
            ("r2", "a", 500, 100, 100),
            ("r2", "a", 900, 100, 100),
        ]
    )
    pred = picks(
        [("r1", "a", 105, 100, 100), ("r2", "a", 100, 100, 110), ("r2", "a", 100, 3000, 100)]
    )
    ev = evaluate(pred, ref, [A])
    runs = ev.per_run.set_index("experiment")
    assert runs.loc["r1", ["tp_0.5", "fp_0.5", "fn_0.5"]].tolist() == [1, 0, 0]
    assert runs.loc["r2", ["tp_0.5", "fp_0.5", "fn_0.5"]].tolist() == [1, 1, 2]
    r = row(ev, "a")
    assert (r["n_pred"], r["n_ref"], r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (3, 4, 2, 1, 2)
    assert r["f1_0.5"] == pytest.approx(4 / 7)
    assert r["f1_0.5"] != pytest.approx(0.7)


def test_class_with_zero_weight_does_not_change_the_score() -> None:
    classes = load_classes("czii")
    names = [c.name for c in classes]
    ref = picks([("r", n, 1000, 1000 + 500 * i, 1000) for i, n in enumerate(names)])
    pred = ref[ref["particle_type"] != "ribosome"]  # miss the ribosome: its F4 = 0
    base = evaluate(pred, ref, classes)
    # weights 1, 0, 2, 1, 2, 1 (sum 7); all but ribosome (weight 1) perfect -> 6/7
    assert base.score == pytest.approx(6 / 7)
    # Wreck beta-amylase (weight 0): its F4 drops to 0, the score does not move.
    bad = pred[pred["particle_type"] != "beta-amylase"]
    bad = pd.concat([bad, picks([("r", "beta-amylase", 5000, 5000, 5000)])], ignore_index=True)
    worse = evaluate(bad, ref, classes)
    assert row(worse, "beta-amylase")["fbeta"] == 0.0
    assert worse.score == pytest.approx(base.score)
    # ... but the unweighted F1 means do see it.
    assert worse.mean_f1[0.5] < base.mean_f1[0.5]


def test_czii_fbeta_by_hand() -> None:
    # Class c (radius 20, hit within 10 A, weight 1): 4 references; predictions hit 2 of
    # them and 1 misses -> TP 2, FP 1, FN 2, P = 2/3, R = 1/2,
    # F4 = 17 * (1/3) / (16 * 2/3 + 1/2) = (17/3) / (67/6) = 34/67.
    # Class d (weight 2) is perfect: F4 = 1. Score = (34/67 + 2 * 1) / 3 = 56/67.
    c = ParticleClass("c", 20.0, 1.0)
    d = ParticleClass("d", 20.0, 2.0)
    ref = picks(
        [
            ("r", "c", 0, 0, 0),
            ("r", "c", 100, 0, 0),
            ("r", "c", 200, 0, 0),
            ("r", "c", 300, 0, 0),
            ("r", "d", 50, 50, 50),
        ]
    )
    pred = picks(
        [("r", "c", 5, 0, 0), ("r", "c", 100, 9, 0), ("r", "c", 200, 11, 0), ("r", "d", 50, 50, 50)]
    )
    ev = evaluate(pred, ref, [c, d])
    r = row(ev, "c")
    assert (r["tp_0.5"], r["fp_0.5"], r["fn_0.5"]) == (2, 1, 2)
    assert r["fbeta"] == pytest.approx(34 / 67)
    assert ev.score == pytest.approx(56 / 67)
    assert precision_recall_fbeta(2, 1, 2, 4.0)[2] == pytest.approx(34 / 67)
    # F-beta uses 0.5 r even when the table shows other factors only.
    ev = evaluate(pred, ref, [c, d], distance_factors=(0.75,))
    assert "tp_0.5" not in ev.per_class and ev.score == pytest.approx(56 / 67)
    assert row(ev, "c")["tp_0.75"] == 3  # 11 A <= 15 A


def test_unknown_particle_types_raise_naming_them() -> None:
    ref = picks([("r", "a", 0, 0, 0)])
    with pytest.raises(ValueError, match="predictions.*mystery"):
        evaluate(picks([("r", "mystery", 0, 0, 0)]), ref, [A])
    with pytest.raises(ValueError, match="references.*zzz"):
        evaluate(ref, picks([("r", "zzz", 0, 0, 0)]), [A])


def test_to_dict_is_json_and_table_is_readable() -> None:
    ref = picks([("r", "a", 100, 100, 100), ("r", "a", 500, 100, 100)])
    pred = picks([("r", "a", 100, 100, 100)])
    ev = evaluate(pred, ref, [A, B])
    d = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert d["czii_score"] == pytest.approx(ev.score)
    assert d["mean_f1"]["0.5"] == pytest.approx(2 / 3)  # P = 1, R = 1/2 -> F1 = 2/3
    assert [c["particle_type"] for c in d["classes"]] == ["a", "b"]
    assert d["classes"][0]["tp_0.75"] == 1
    # all weights 0: no CZII score, reported as null rather than NaN
    zero = evaluate(pred, ref, [ParticleClass("a", 60.0, 0.0)])
    assert np.isnan(zero.score) and zero.to_dict()["czii_score"] is None
    text = ev.format_table()
    lines = text.splitlines()
    assert "@0.5r" in lines[0] and "@0.75r" in lines[0]
    assert lines[1].split()[:4] == ["class", "weight", "pred", "ref"]
    # header and both class rows are right-aligned to the same width; rows in class order
    assert len(lines[1]) == len(lines[2]) == len(lines[3]) == len(lines[4])
    assert lines[3].split()[:4] == ["a", "1", "1", "2"]
    assert lines[4].split()[:4] == ["b", "1", "0", "0"]
    assert "CZII score" in text and "0.6667" in text


def test_random_baseline_counts_and_extents() -> None:
    ref = picks(
        [("r1", "a", 10, 10, 10)] * 3
        + [("r1", "b", 10, 10, 10)] * 2
        + [("r2", "a", 10, 10, 10)] * 4
    )
    extents = {"r1": (1840.0, 6300.0, 6300.0), "r2": (500.0, 700.0, 900.0)}
    rnd = random_picks_baseline(ref, extents, seed=1)
    counts = rnd.groupby(["experiment", "particle_type"]).size().to_dict()
    assert counts == {("r1", "a"): 3, ("r1", "b"): 2, ("r2", "a"): 4}
    for run, (z, y, x) in extents.items():
        sub = rnd[rnd["experiment"] == run]
        assert ((sub["z"] >= 0) & (sub["z"] < z)).all()
        assert ((sub["y"] >= 0) & (sub["y"] < y)).all()
        assert ((sub["x"] >= 0) & (sub["x"] < x)).all()
    pd.testing.assert_frame_equal(rnd, random_picks_baseline(ref, extents, seed=1))
    with pytest.raises(ValueError, match="r2"):
        random_picks_baseline(ref, {"r1": extents["r1"]}, seed=1)
    evaluate(rnd, ref, [A, B])  # a valid picks table for evaluate


def test_chance_level_is_one_where_every_random_pick_hits_and_zero_where_none_can():
    ref = picks([("r1", "a", 10, 10, 10), ("r1", "b", 10, 10, 10)])
    # every point of a 20 A box lies within 0.5 x 60 A of its centre: each draw hits
    certain = chance_level(ref, {"r1": (20.0, 20.0, 20.0)}, [A, B], draws=5)
    assert certain == {"score": 1.0, "mean_f1@0.5r": 1.0, "mean_f1@0.75r": 1.0}
    hopeless = chance_level(ref, {"r1": (1e7, 1e7, 1e7)}, [A, B], draws=5)
    assert hopeless == {"score": 0.0, "mean_f1@0.5r": 0.0, "mean_f1@0.75r": 0.0}

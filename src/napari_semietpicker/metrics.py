"""Picking metrics: F1 at 0.5 and 0.75 x radius (the paper) and the CZII weighted F-beta.

Both use the CZII hit rule (docs/design.md, the CZII metric), per run (experiment) and class:

- a prediction *hits* if some reference centre of its class lies within
  ``factor * radius`` (distance <= threshold counts);
- TP = number of distinct references hit by any prediction, FP = predictions - TP,
  FN = references - TP. Matching is not one-to-one: two predictions on one particle
  give one TP and one FP.

TP/FP/FN are summed over runs per class; precision, recall and F-beta come from the sums
(never averaged per run), ``F_beta = (1 + b^2) P R / (b^2 P + R)``, 0 when ``P + R = 0``.
Precision is ``TP / (TP + FP)`` (0 with no predictions), recall ``TP / (TP + FN)``
(0 with no references), as in the official Kaggle metric. The CZII score is the mean of
the per-class F-beta (b = 4, at 0.5 x radius) weighted by the class weights.

Faithful to the official code, also where it is odd: one prediction within range of two
references hits both, so TP = 2 and FP = 1 - 2 = -1 for that run, and precision can then
exceed 1. That needs two references of one class closer than ``2 * factor * radius``
(<= 1.5 radius), which non-overlapping particles cannot be; :func:`evaluate` warns when
it happens (it usually means duplicated or misplaced reference picks).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .classes import ParticleClass, check_unique_names
from .io.picks import positions_A, validate_picks

CZII_DISTANCE_FACTOR = 0.5
"""Hit distance of the CZII score, as a fraction of the class radius."""
CZII_BETA = 4.0
"""Beta of the CZII F-beta: recall counts 16 times as much as precision."""

_REL_EPS = 1e-9
"""Relative slack on the hit distance, so a point exactly at the threshold still hits
after float rounding (e.g. a (3, 4, 0) * k offset whose computed norm is 5k + 1 ulp)."""


def match_picks(
    pred_zyx: np.ndarray, ref_zyx: np.ndarray, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which predictions hit a reference and which references are hit (CZII rule).

    A prediction hits if some reference lies within ``max_distance`` (inclusive, with a
    relative slack of 1e-9 against rounding); a reference is hit if some prediction lies
    within ``max_distance``. Not one-to-one: a reference can be hit by several
    predictions and one prediction can hit several references.

    Returns ``(pred_hit, ref_hit)``: boolean arrays of lengths N_pred and N_ref.
    """
    pred = _as_points(pred_zyx, "pred_zyx")
    ref = _as_points(ref_zyx, "ref_zyx")
    max_distance = float(max_distance)
    if not (math.isfinite(max_distance) and max_distance >= 0):
        raise ValueError(f"max_distance must be finite and >= 0, got {max_distance}")
    pred_hit = np.zeros(len(pred), dtype=bool)
    ref_hit = np.zeros(len(ref), dtype=bool)
    if len(pred) == 0 or len(ref) == 0:
        return pred_hit, ref_hit
    bound = max_distance * (1.0 + _REL_EPS)
    # Nearest-neighbour distances both ways: O((N + M) log) and no (N, M) matrix.
    d_pred, _ = cKDTree(ref).query(pred, k=1)
    d_ref, _ = cKDTree(pred).query(ref, k=1)
    pred_hit[:] = d_pred <= bound
    ref_hit[:] = d_ref <= bound
    return pred_hit, ref_hit


def count_hits(
    pred_zyx: np.ndarray, ref_zyx: np.ndarray, max_distance: float
) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` of one run and class: TP = distinct references hit.

    FP = predictions - TP and FN = references - TP, as in the official CZII metric,
    so FP is negative when one prediction hits several references (see module notes).
    """
    _, ref_hit = match_picks(pred_zyx, ref_zyx, max_distance)
    n_pred = len(_as_points(pred_zyx, "pred_zyx"))
    tp = int(ref_hit.sum())
    return tp, n_pred - tp, len(ref_hit) - tp


def precision_recall_fbeta(
    tp: float, fp: float, fn: float, beta: float
) -> tuple[float, float, float]:
    """Precision, recall and F-beta from counts; each 0 where undefined (official rule)."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    b2 = beta * beta
    fbeta = (
        (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall > 0 else 0.0
    )
    return float(precision), float(recall), float(fbeta)


def factor_label(factor: float) -> str:
    """Column suffix of a distance factor: 0.5 -> ``"0.5"`` (so ``tp_0.5``, ``f1_0.75``)."""
    return f"{factor:g}"


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    ``per_class``: one row per class (in the order of the classes given) with
    particle_type, weight, n_pred, n_ref, ``tp_f fp_f fn_f precision_f recall_f f1_f`` for
    each distance factor f, and fbeta (CZII rule: at 0.5 x radius, summed over runs).
    ``per_run``: the counts per run and class the sums come from.
    ``score``: CZII weighted F-beta (NaN if all weights are 0).
    ``mean_f1[f]``: macro F1 over classes that have references or predictions (NaN if none).
    ``micro_f1[f]``: F1 from TP/FP/FN summed over all classes.
    """

    per_class: pd.DataFrame
    per_run: pd.DataFrame
    score: float
    mean_f1: dict[float, float]
    micro_f1: dict[float, float]
    beta: float = CZII_BETA
    distance_factors: tuple[float, ...] = (0.5, 0.75)
    experiments: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable figures (NaN becomes None), for ``--json``."""
        return {
            "czii_score": _json_float(self.score),
            "beta": float(self.beta),
            "distance_factors": [float(f) for f in self.distance_factors],
            "mean_f1": {factor_label(f): _json_float(v) for f, v in self.mean_f1.items()},
            "micro_f1": {factor_label(f): _json_float(v) for f, v in self.micro_f1.items()},
            "experiments": [str(e) for e in self.experiments],
            "classes": [
                {str(k): _json_value(v) for k, v in row.items()}
                for row in self.per_class.to_dict(orient="records")
            ],
        }

    def format_table(self) -> str:
        """An aligned text table per class, then the overall figures, for the terminal."""
        columns: list[tuple[str, str, list[str]]] = [  # (group, header, cells)
            ("", "class", [str(v) for v in self.per_class["particle_type"]]),
            ("", "weight", [f"{v:g}" for v in self.per_class["weight"]]),
            ("", "pred", [str(int(v)) for v in self.per_class["n_pred"]]),
            ("", "ref", [str(int(v)) for v in self.per_class["n_ref"]]),
        ]
        for f in self.distance_factors:
            s = factor_label(f)
            group = f"@{s}r"
            for name in ("tp", "fp", "fn"):
                columns.append(
                    (group, name.upper(), [str(int(v)) for v in self.per_class[f"{name}_{s}"]])
                )
            for name, header in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
                columns.append((group, header, [f"{v:.3f}" for v in self.per_class[f"{name}_{s}"]]))
        columns.append(
            (
                f"@{factor_label(CZII_DISTANCE_FACTOR)}r",
                f"F{self.beta:g}",
                [f"{v:.3f}" for v in self.per_class["fbeta"]],
            )
        )

        widths = [
            max(len(h), *(len(c) for c in cells)) if cells else len(h) for _, h, cells in columns
        ]

        def line(cells: Sequence[str]) -> str:
            pairs = enumerate(zip(cells, widths, strict=True))
            parts = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
            return "  ".join(parts).rstrip()

        # Group labels above their first column, e.g. "@0.5r" over TP.
        group_cells = []
        previous = None
        for group, _, _ in columns:
            group_cells.append(group if group and group != previous else "")
            previous = group
        group_line = "  ".join(
            g.ljust(w) for g, w in zip(group_cells, widths, strict=True)
        ).rstrip()
        header = line([h for _, h, _ in columns])
        rows = [line([cells[i] for _, _, cells in columns]) for i in range(len(self.per_class))]
        out = [group_line, header, "-" * len(header), *rows, ""]
        czii = factor_label(CZII_DISTANCE_FACTOR)
        out.append(
            f"CZII score (F{self.beta:g} at {czii} x radius, class-weighted): {_fmt(self.score)}"
        )
        out.append(
            "mean F1 over classes: "
            + ", ".join(f"{_fmt(v)} @{factor_label(f)}r" for f, v in self.mean_f1.items())
        )
        out.append(
            "micro F1 (counts summed over classes): "
            + ", ".join(f"{_fmt(v)} @{factor_label(f)}r" for f, v in self.micro_f1.items())
        )
        out.append(f"runs: {len(self.experiments)}")
        return "\n".join(out)


def evaluate(
    pred_df: pd.DataFrame,
    ref_df: pd.DataFrame,
    classes: Sequence[ParticleClass],
    distance_factors: Sequence[float] = (0.5, 0.75),
    beta: float = CZII_BETA,
    only_reference_runs: bool = False,
) -> Evaluation:
    """Score predicted picks against reference picks (both picks tables, Angstrom).

    Every class in ``classes`` gets a row, even with no picks at all (its F-beta is then
    0 and it keeps its weight in the CZII score, as in the official metric, which divides
    by the sum of all class weights). Runs that appear only in predictions count as all
    FP, runs only in references as all FN. ``only_reference_runs=True`` instead drops
    predictions in runs without any reference, as the Kaggle metric does with runs
    outside its solution file. Particle types not in ``classes`` raise ValueError.
    """
    classes = list(classes)
    if not classes:
        raise ValueError("evaluate needs at least one particle class")
    check_unique_names(classes)
    factors = tuple(float(f) for f in distance_factors)
    if not factors or any(not (math.isfinite(f) and f >= 0) for f in factors):
        raise ValueError(
            f"distance_factors must be non-empty, finite and >= 0, got {distance_factors}"
        )
    if len(set(factors)) != len(factors):
        raise ValueError(f"duplicate distance factors: {distance_factors}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    pred = validate_picks(pred_df, source="predictions")
    ref = validate_picks(ref_df, source="references")
    names = [c.name for c in classes]
    for table, what in ((pred, "predictions"), (ref, "references")):
        unknown = sorted(set(table["particle_type"]) - set(names))
        if unknown:
            raise ValueError(
                f"{what}: unknown particle type(s) {', '.join(unknown)}; "
                f"known classes: {', '.join(names)}"
            )
    if only_reference_runs:
        pred = pred[pred["experiment"].isin(set(ref["experiment"]))]
    experiments = sorted(set(pred["experiment"]) | set(ref["experiment"]))
    # The CZII F-beta always uses 0.5 x radius, whether or not it is among the factors.
    all_factors = factors if CZII_DISTANCE_FACTOR in factors else (*factors, CZII_DISTANCE_FACTOR)

    pred_groups = {key: positions_A(g) for key, g in pred.groupby(["experiment", "particle_type"])}
    ref_groups = {key: positions_A(g) for key, g in ref.groupby(["experiment", "particle_type"])}
    empty = np.zeros((0, 3))
    run_rows = []
    negative_fp = []
    for experiment in experiments:
        for cls in classes:
            p = pred_groups.get((experiment, cls.name), empty)
            r = ref_groups.get((experiment, cls.name), empty)
            if len(p) == 0 and len(r) == 0:
                continue
            row: dict[str, Any] = {
                "experiment": experiment,
                "particle_type": cls.name,
                "n_pred": len(p),
                "n_ref": len(r),
            }
            for f in all_factors:
                tp, fp, fn = count_hits(p, r, f * cls.radius_A)
                s = factor_label(f)
                row.update({f"tp_{s}": tp, f"fp_{s}": fp, f"fn_{s}": fn})
                if fp < 0:
                    negative_fp.append(f"{experiment}/{cls.name}@{s}r")
            run_rows.append(row)
    if negative_fp:
        warnings.warn(
            "one prediction hit several references (negative FP, precision may exceed 1, as "
            "in the official CZII metric) in: "
            + ", ".join(negative_fp)
            + "; references of one class lie closer than twice the hit distance",
            stacklevel=2,
        )
    count_cols = [f"{k}_{factor_label(f)}" for f in all_factors for k in ("tp", "fp", "fn")]
    per_run = pd.DataFrame(
        run_rows, columns=["experiment", "particle_type", "n_pred", "n_ref", *count_cols]
    )
    per_run[["n_pred", "n_ref", *count_cols]] = per_run[["n_pred", "n_ref", *count_cols]].astype(
        int
    )

    sums = per_run.groupby("particle_type")[["n_pred", "n_ref", *count_cols]].sum()
    class_rows = []
    for cls in classes:
        totals = sums.loc[cls.name] if cls.name in sums.index else None
        row = {
            "particle_type": cls.name,
            "weight": float(cls.weight),
            "n_pred": 0 if totals is None else int(totals["n_pred"]),
            "n_ref": 0 if totals is None else int(totals["n_ref"]),
        }
        for f in all_factors:
            s = factor_label(f)
            tp, fp, fn = (
                0 if totals is None else int(totals[f"{k}_{s}"]) for k in ("tp", "fp", "fn")
            )
            precision, recall, f1 = precision_recall_fbeta(tp, fp, fn, 1.0)
            if f in factors:
                row.update(
                    {
                        f"tp_{s}": tp,
                        f"fp_{s}": fp,
                        f"fn_{s}": fn,
                        f"precision_{s}": precision,
                        f"recall_{s}": recall,
                        f"f1_{s}": f1,
                    }
                )
            if f == CZII_DISTANCE_FACTOR:
                row["fbeta"] = precision_recall_fbeta(tp, fp, fn, beta)[2]
        class_rows.append(row)
    per_class = pd.DataFrame(class_rows)
    per_class = per_class[
        [
            "particle_type",
            "n_pred",
            "n_ref",
            *[
                c
                for c in per_class.columns
                if c not in ("particle_type", "n_pred", "n_ref", "fbeta", "weight")
            ],
            "fbeta",
            "weight",
        ]
    ]

    total_weight = float(per_class["weight"].sum())
    score = (
        float((per_class["fbeta"] * per_class["weight"]).sum()) / total_weight
        if total_weight > 0
        else float("nan")
    )
    present = (per_class["n_pred"] > 0) | (per_class["n_ref"] > 0)
    mean_f1: dict[float, float] = {}
    micro_f1: dict[float, float] = {}
    for f in factors:
        s = factor_label(f)
        mean_f1[f] = (
            float(per_class.loc[present, f"f1_{s}"].mean()) if present.any() else float("nan")
        )
        micro_f1[f] = precision_recall_fbeta(
            per_class[f"tp_{s}"].sum(), per_class[f"fp_{s}"].sum(), per_class[f"fn_{s}"].sum(), 1.0
        )[2]
    return Evaluation(
        per_class=per_class,
        per_run=per_run,
        score=score,
        mean_f1=mean_f1,
        micro_f1=micro_f1,
        beta=float(beta),
        distance_factors=factors,
        experiments=experiments,
    )


def random_picks_baseline(
    ref_df: pd.DataFrame,
    shape_A_by_experiment: Mapping[str, tuple[float, float, float]],
    seed: int | None = 0,
) -> pd.DataFrame:
    """Uniformly random picks: as many per run and class as the references, inside each volume.

    ``shape_A_by_experiment`` maps each run to its (z, y, x) extent in Angstrom; positions
    are drawn in ``[0, extent)``. The chance level a trained model must beat.
    """
    ref = validate_picks(ref_df, source="references")
    missing = sorted(set(ref["experiment"]) - set(shape_A_by_experiment))
    if missing:
        raise ValueError(f"no volume extent for run(s) {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    parts = []
    for (experiment, particle_type), group in ref.groupby(
        ["experiment", "particle_type"], sort=True
    ):
        given = shape_A_by_experiment[cast(str, experiment)]  # run names are str
        extent = np.asarray(given, dtype=float)
        if extent.shape != (3,) or not np.all(np.isfinite(extent) & (extent > 0)):
            raise ValueError(
                f"run {experiment!r}: extent must be 3 positive (z, y, x) Angstrom "
                f"values, got {given!r}"
            )
        zyx = rng.uniform(0.0, 1.0, size=(len(group), 3)) * extent
        parts.append(
            pd.DataFrame(
                {
                    "experiment": experiment,
                    "particle_type": particle_type,
                    "x": zyx[:, 2],
                    "y": zyx[:, 1],
                    "z": zyx[:, 0],
                }
            )
        )
    if not parts:
        return ref[["experiment", "particle_type", "x", "y", "z"]].iloc[:0].copy()
    return pd.concat(parts, ignore_index=True)


def chance_level(ref_df: pd.DataFrame,
                 shape_A_by_experiment: Mapping[str, tuple[float, float, float]],
                 classes: Sequence[ParticleClass], draws: int = 10,
                 seed: int = 0) -> dict[str, float]:
    """What random picks of the reference counts score, averaged over ``draws`` draws.

    The level a model must beat: keys ``score`` (CZII) and ``mean_f1@<f>r`` per distance
    factor. One draw of a few picks is noisy, hence the average.
    """
    results = [evaluate(random_picks_baseline(ref_df, shape_A_by_experiment, seed + draw),
                        ref_df, classes) for draw in range(draws)]
    level = {"score": float(np.mean([r.score for r in results]))}
    for factor in results[0].distance_factors:
        level[f"mean_f1@{factor_label(factor)}r"] = float(
            np.mean([r.mean_f1[factor] for r in results]))
    return level


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"{name} must be an (N, 3) array of z, y, x positions, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite positions")
    return arr


def _json_float(value: float | np.floating) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(value)
    return str(value)


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "n/a"

"""Per-class score thresholds chosen from labelled tomograms, without looking at test data.

The CZII score is a weighted sum of per-class F-beta values, so each class's threshold can
be chosen alone: the one that maximises that class's F-beta (beta = 4, the metric's) on
the labelled tomograms. With two or more labelled tomograms the choice is cross-validated:
for each tomogram a threshold is chosen on the others, and the median of those thresholds
is kept (one lucky tomogram cannot set it). With one, it is chosen on that one.

Counts follow the CZII hit rule of :mod:`metrics` (a reference is found when any kept
prediction lies within 0.5 x radius; FP = kept predictions - TP), computed for every
candidate threshold at once: a reference counts as found at threshold t exactly when the
best score of the predictions hitting it is >= t.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from ..classes import ParticleClass
from ..geometry import Grid
from ..io.picks import empty_picks, picks_from_positions, positions_A
from ..metrics import CZII_BETA, CZII_DISTANCE_FACTOR, evaluate, precision_recall_fbeta
from ..model.checkpoint import ModelCard
from ..model.network import AsymmetricUNet3D
from .predict import PEAK_FLOOR, PredictConfig, peaks_from_heatmaps, predict_heatmaps

if TYPE_CHECKING:  # only a type here: at run time inference never imports training
    from ..training.data import Volume


@dataclass
class ThresholdCurve:
    """F-beta of one class as a function of the threshold, from summed counts.

    ``thresholds`` are the candidate scores (descending); at ``thresholds[i]`` the kept
    predictions are those scoring >= it.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    n_pred: np.ndarray
    n_ref: int

    def fbeta(self, beta: float) -> np.ndarray:
        return np.array([precision_recall_fbeta(tp, n - tp, self.n_ref - tp, beta)[2]
                         for tp, n in zip(self.tp, self.n_pred, strict=True)])


def class_curve(candidates: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                max_distance: float) -> ThresholdCurve:
    """Counts at every candidate threshold, summed over tomograms.

    ``candidates`` holds one ``(pred_zyx, scores, ref_zyx)`` triple per tomogram (Angstrom).
    """
    all_scores = np.concatenate([np.asarray(s, dtype=float) for _, s, _ in candidates])
    thresholds = np.unique(all_scores)[::-1]
    tp = np.zeros(len(thresholds), dtype=int)
    n_pred = np.zeros(len(thresholds), dtype=int)
    n_ref = 0
    for pred, scores, ref in candidates:
        scores = np.asarray(scores, dtype=float)
        ascending = np.sort(scores)
        # predictions kept at each threshold: scores >= t
        n_pred += len(scores) - np.searchsorted(ascending, thresholds, side="left")
        n_ref += len(ref)
        if len(pred) == 0 or len(ref) == 0:
            continue
        best = _best_hit_score(np.asarray(pred, float), scores, np.asarray(ref, float),
                               max_distance)
        found = np.sort(best[np.isfinite(best)])
        tp += len(found) - np.searchsorted(found, thresholds, side="left")
    return ThresholdCurve(thresholds, tp, n_pred, n_ref)


def _best_hit_score(pred: np.ndarray, scores: np.ndarray, ref: np.ndarray,
                    max_distance: float) -> np.ndarray:
    """Per reference, the highest score of a prediction within ``max_distance`` (-inf: none)."""
    best = np.full(len(ref), -np.inf)
    near = cKDTree(pred).query_ball_point(ref, r=max_distance * (1 + 1e-9))
    for i, hits in enumerate(near):
        if hits:
            best[i] = scores[hits].max()
    return best


def best_threshold(curve: ThresholdCurve, beta: float, floor: float = 0.0) -> float:
    """The threshold maximising F-beta; the middle of the gap below the best candidate score
    (a threshold between two observed scores keeps the same picks on these data and is the
    least tuned to them). ``floor`` when there are no candidates (nothing to learn from)."""
    if len(curve.thresholds) == 0:
        return float(floor)
    values = curve.fbeta(beta)
    i = int(np.argmax(values))  # the first (highest) threshold among ties: fewer picks
    below = curve.thresholds[i + 1] if i + 1 < len(curve.thresholds) else floor
    return float(max(floor, 0.5 * (curve.thresholds[i] + max(below, floor))))


def choose_thresholds(candidates: pd.DataFrame, references: pd.DataFrame,
                      classes: Sequence[ParticleClass], beta: float = CZII_BETA,
                      floor: float = 0.0, runs: Sequence[str] | None = None
                      ) -> dict[str, float]:
    """Per-class thresholds from scored candidate picks on labelled tomograms.

    ``candidates``: picks table with a ``score`` column (e.g. a :class:`PeakCache`'s picks
    of every labelled tomogram); ``references``: the labelled picks. Tomograms are the
    experiments of ``references`` unless ``runs`` names them (a labelled tomogram without
    particles still counts its false positives); with two or more, thresholds are
    cross-validated (chosen on all others, for each one; the median kept). A class
    without labelled particles gets 1.0: the model has learned to find nothing there.
    """
    runs = sorted(set(references["experiment"]) if runs is None else set(runs))
    if not runs:
        raise ValueError("choosing thresholds needs labelled tomograms with picks")
    folds = [[r for r in runs if r != held_out] for held_out in runs] if len(runs) > 1 \
        else [runs]
    chosen = {}
    for cls in classes:
        per_run = {run: _run_candidates(candidates, references, run, cls.name) for run in runs}
        distance = CZII_DISTANCE_FACTOR * cls.radius_A
        # A fold without particles of the class says nothing about where its hits score.
        informative = [fold for fold in folds if any(len(per_run[r][2]) for r in fold)]
        if not informative:  # no labelled particle: every pick would be a false positive
            chosen[cls.name] = 1.0
            continue
        fold_thresholds = [best_threshold(class_curve([per_run[r] for r in fold], distance),
                                          beta, floor) for fold in informative]
        chosen[cls.name] = float(np.clip(np.median(fold_thresholds), 0.0, 1.0))
    return chosen


def _run_candidates(candidates: pd.DataFrame, references: pd.DataFrame, run: str,
                    name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = candidates[(candidates["experiment"] == run) & (candidates["particle_type"] == name)]
    ref = references[(references["experiment"] == run) & (references["particle_type"] == name)]
    return positions_A(pred), pred["score"].to_numpy(float), positions_A(ref)


def labelled_references(volumes: Sequence[Volume], classes: Sequence[ParticleClass]
                        ) -> pd.DataFrame:
    """The picks of labelled training volumes as one picks table, in Angstrom of each
    volume's own grid from its first voxel (the frame :func:`tune_model_thresholds` picks in)."""
    names = np.array([c.name for c in classes])
    tables = [picks_from_positions(Grid(v.voxel_size).to_angstrom(v.positions), v.name,
                                   list(names[v.class_index]))
              for v in volumes if v.positions is not None]
    return pd.concat(tables, ignore_index=True) if tables else empty_picks()


def tune_model_thresholds(model: AsymmetricUNet3D, card: ModelCard, volumes: Sequence[Volume],
                          device: torch.device | str = "cpu", beta: float = CZII_BETA,
                          config: PredictConfig | None = None) -> dict[str, float]:
    """Pick the labelled volumes with ``model`` and choose its per-class thresholds there.

    The volumes are the normalised training volumes, at the model's voxel size. Thresholds
    never go below the lowest score prediction keeps (:data:`predict.PEAK_FLOOR`).
    """
    return thresholds_and_labelled_score(model, card, volumes, device, beta, config)[0]


def thresholds_and_labelled_score(model: AsymmetricUNet3D, card: ModelCard,
                                  volumes: Sequence[Volume],
                                  device: torch.device | str = "cpu", beta: float = CZII_BETA,
                                  config: PredictConfig | None = None
                                  ) -> tuple[dict[str, float], float]:
    """:func:`tune_model_thresholds`, and the class-weighted F-beta (the CZII score for
    beta 4) that ``model``'s picks of the labelled volumes reach at those thresholds: the
    evidence on which training keeps a co-trained teacher or its student."""
    labelled = [v for v in volumes if v.positions is not None]
    candidates = pd.concat(
        [peaks_from_heatmaps(predict_heatmaps(model, v.data, config, device), card, v.name,
                             Grid(v.voxel_size), volume_shape=v.data.shape).picks
         for v in labelled], ignore_index=True)
    references = labelled_references(labelled, card.classes)
    thresholds = choose_thresholds(candidates, references, card.classes, beta,
                                   floor=PEAK_FLOOR, runs=[v.name for v in labelled])
    limits = candidates["particle_type"].map(thresholds).to_numpy(float)
    kept = candidates[candidates["score"].to_numpy(float) >= limits]  # (also when empty)
    return thresholds, evaluate(kept, references, card.classes, beta=beta).score

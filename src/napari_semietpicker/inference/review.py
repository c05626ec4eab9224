"""The review queue: which picks a person should look at first, and what they decided.

Every signal comes from what prediction already computed (the cached peaks, their flip-view
spread, the heatmaps); nothing is recomputed. Per candidate, in [0, 1]:

- ``near threshold``: 1 at the class threshold, falling to 0 at ``THRESHOLD_BAND`` from it
  (candidates down to the threshold minus the band are queued: they may be missed particles);
- ``views disagree``: the standard deviation of the four flip views at the peak over its
  score (only with test-time flips: the ``view_spread`` column of the peaks);
- ``class confusion``: another class's candidate peak within the larger of the two radii,
  its score over this one's;
- ``uncovered``: places where a class's heatmap holds the mass of a peak at least as high as
  the threshold (summed within one radius) but no candidate of that class lies within a
  radius, e.g. a smeared or split response.

They combine as ``1 - prod(1 - u)`` (any one strong signal is enough), times a class factor
that puts classes the CZII score weighs less later, into one queue across classes. Decisions
(accept, reject, change class, move) are a small table saved atomically as a picks CSV with a
``role`` column, so the file is itself a label set: ``semietpicker train --picks`` reads it
(accepted and moved picks are positives, rejected ones hard negatives).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

from ..classes import ParticleClass
from ..geometry import Grid
from ..io.atomic import atomic_path
from ..io.autosave import autosave_path
from ..io.picks import NEGATIVE, POSITIVE, positions_A, validate_picks
from ..model.heatmap import class_sigmas, local_maxima, nms_kernels

#: Scores this far either side of the class threshold count as uncertain.
THRESHOLD_BAND = 0.2
#: No one reviews more than this many items of one tomogram: the queue stops there.
MAX_ITEMS = 2000
#: A class of weight 0 still gets this share of the priority (it is still a class to pick).
MIN_CLASS_FACTOR = 0.25
ACCEPT, REJECT, CHANGE_CLASS, MOVE = "accept", "reject", "change-class", "move"
ACTIONS = (ACCEPT, REJECT, CHANGE_CLASS, MOVE)
#: Queue columns besides the picks columns (experiment, particle_type, x, y, z, score).
QUEUE_COLUMNS = ("item", "peak", "kind", "priority", "reason")
DECISION_COLUMNS = ("item", "action", "source_type", "source_x", "source_y", "source_z")


def _noisy_or(parts: Sequence[np.ndarray]) -> np.ndarray:
    """1 - prod(1 - u): high when any part is high."""
    return 1.0 - np.prod([1.0 - np.clip(u, 0.0, 1.0) for u in parts], axis=0)


def threshold_uncertainty(scores: np.ndarray, thresholds: np.ndarray,
                          band: float = THRESHOLD_BAND) -> np.ndarray:
    """1 at the threshold, 0 at ``band`` or more from it (linear in between)."""
    return np.clip(1.0 - np.abs(np.asarray(scores) - thresholds) / band, 0.0, 1.0)


def confusion(picks: pd.DataFrame, classes: Sequence[ParticleClass]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per pick: the nearest candidate of each other class within the larger of the two
    radii; the highest of their scores over the pick's own (at most 1), and its row (-1).

    One nearest-neighbour query per pair of classes: fast for the hundreds of thousands of
    candidates of a whole tomogram.
    """
    zyx = positions_A(picks)
    names = picks["particle_type"].to_numpy(str)
    scores = picks["score"].to_numpy(float)
    ratio = np.zeros(len(picks))
    rival = np.full(len(picks), -1)
    rows = {c.name: np.flatnonzero(names == c.name) for c in classes}
    for a in classes:
        for b in classes:
            if a.name == b.name or not len(rows[a.name]) or not len(rows[b.name]):
                continue
            reach = max(a.radius_A, b.radius_A)
            distance, nearest = cKDTree(zyx[rows[b.name]]).query(
                zyx[rows[a.name]], distance_upper_bound=reach * (1 + 1e-9))
            found = np.isfinite(distance)
            own, other = rows[a.name][found], rows[b.name][nearest[found]]
            value = np.minimum(1.0, scores[other] / np.maximum(scores[own], 1e-6))
            better = value > ratio[own]
            ratio[own[better]], rival[own[better]] = value[better], other[better]
    return ratio, rival


def box_mean(heat: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of a (D, H, W) grid over the cube of side 2 radius + 1 around each voxel (zeros
    outside), from running sums along each axis: the cost does not grow with the cube."""
    out = heat.float()
    side = 2 * radius + 1
    for dim in range(3):
        pad = [0, 0] * 3
        pad[2 * (2 - dim)], pad[2 * (2 - dim) + 1] = radius + 1, radius
        sums = F.pad(out, pad).cumsum(dim)
        n = out.shape[dim]
        out = (sums.narrow(dim, side, n) - sums.narrow(dim, 0, n)) / side
    return out


def peak_mass(heat: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Heatmap summed within ``radius`` output voxels (a cube), in units of the mass an ideal
    unit-height peak of this class's width has there: a sharp peak of height h gives ~h."""
    mass = box_mean(heat, radius)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ideal = torch.exp(-offsets**2 / (2 * sigma**2)).mean() ** 3
    return mass / ideal


def uncovered_regions(heat: torch.Tensor | np.ndarray, classes: Sequence[ParticleClass],
                      heat_grid: Grid, thresholds: Mapping[str, float],
                      candidates: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Places where a class's heatmap mass reaches its threshold with no candidate near.

    ``heat`` is (C, D, H, W) on ``heat_grid`` (the model's output grid in the tomogram's
    frame, :attr:`.predict.PeakCache.heatmap_grid`); ``candidates`` are the queued and
    picked peaks (Angstrom). Returns picks-like rows with ``mass``.
    """
    heat = torch.as_tensor(np.asarray(heat) if not isinstance(heat, torch.Tensor) else heat)
    sigmas = class_sigmas(classes, heat_grid.voxel_size, 1)
    kernels = nms_kernels(classes, heat_grid.voxel_size, 1)
    rows = []
    for c, cls in enumerate(classes):
        radius = max(1, int(round(cls.radius_A / heat_grid.voxel_size)))
        mass = peak_mass(heat[c], float(sigmas[c]), radius)
        level = thresholds[cls.name]
        index = torch.nonzero(local_maxima(mass, kernels[c]) & (mass >= level)).cpu().numpy()
        if not len(index):
            continue
        zyx = heat_grid.to_angstrom(index)
        own = candidates[candidates["particle_type"] == cls.name]
        if len(own):
            distance = cKDTree(positions_A(own)).query(zyx)[0]
            index, zyx = index[distance > cls.radius_A], zyx[distance > cls.radius_A]
        for (i, j, k), (z, y, x) in zip(index, zyx):
            rows.append({"experiment": experiment, "particle_type": cls.name, "x": x, "y": y,
                         "z": z, "score": float(heat[c, i, j, k]),
                         "mass": float(mass[i, j, k])})
    return pd.DataFrame(rows, columns=["experiment", "particle_type", "x", "y", "z", "score",
                                       "mass"])


def _peak_reason(row: Mapping[Hashable, Any], thresholds: Mapping[str, float]) -> str:
    """Why a peak is in the queue (``row``: one record of the queue, with its ``signal_*``
    columns): its signals, strongest first."""
    parts = [(row["signal_near"], f"score {row['score']:.2f} near threshold "
                                  f"{thresholds[row['particle_type']]:.2f}"),
             (row["signal_views"], f"flip views disagree (sd {row['signal_spread']:.2f})"),
             (row["signal_confusion"],
              f"also {row['signal_rival_type']} {row['signal_rival_score']:.2f} here")]
    said = [text for u, text in sorted(parts, key=lambda p: -p[0]) if u > 0.05]
    return "; ".join(said) or f"confident (score {row['score']:.2f})"


def class_factors(classes: Sequence[ParticleClass]) -> dict[str, float]:
    """Priority factor per class: 1 for the most weighted, ``MIN_CLASS_FACTOR`` for weight 0."""
    top = max((c.weight for c in classes), default=0.0)
    return {c.name: 1.0 if top <= 0 else MIN_CLASS_FACTOR + (1 - MIN_CLASS_FACTOR) * c.weight / top
            for c in classes}


def build_queue(peaks: pd.DataFrame, classes: Sequence[ParticleClass],
                thresholds: Mapping[str, float], heat: torch.Tensor | np.ndarray | None = None,
                heat_grid: Grid | None = None, band: float = THRESHOLD_BAND,
                max_items: int = MAX_ITEMS) -> pd.DataFrame:
    """The review queue of one tomogram, most uncertain first, across classes, at most
    ``max_items`` long.

    ``peaks`` are the cached candidate peaks (a :class:`~.predict.PeakCache`'s picks: their
    row number is the peak id; an optional ``view_spread`` column). With ``heat`` and
    ``heat_grid`` (the heatmaps and where they lie: :attr:`.predict.PeakCache.heatmap_grid`),
    uncovered regions are queued too. Columns: the picks columns, ``item`` (0.. in queue
    order), ``peak`` (-1 for an uncovered region), ``kind`` (peak or uncovered),
    ``priority`` and ``reason``.
    """
    peaks = peaks.reset_index(drop=True)
    limit = peaks["particle_type"].map(thresholds).to_numpy(float)
    scores = peaks["score"].to_numpy(float)
    queued = peaks[scores >= limit - band].copy()
    queued["peak"] = queued.index.to_numpy()
    limit = queued["particle_type"].map(thresholds).to_numpy(float)
    near = threshold_uncertainty(queued["score"].to_numpy(float), limit, band)
    spread = queued["view_spread"].to_numpy(float) if "view_spread" in queued else \
        np.zeros(len(queued))
    views = np.clip(spread / np.maximum(queued["score"].to_numpy(float), 1e-6), 0, 1)
    ratio, rival = confusion(queued, classes)
    queued["priority"] = _noisy_or([near, views, ratio]) if len(queued) else []
    signals = {"near": near, "views": views, "spread": spread, "confusion": ratio,
               "rival_type": np.where(rival >= 0, queued["particle_type"].to_numpy(str)[rival],
                                      ""),
               "rival_score": np.where(rival >= 0, queued["score"].to_numpy(float)[rival], 0.0)}
    queued = queued.assign(**{f"signal_{k}": v for k, v in signals.items()}, kind="peak")
    tables = [queued]
    if heat is not None and heat_grid is not None and len(peaks):
        experiment = str(peaks["experiment"].iloc[0])
        empty = uncovered_regions(heat, classes, heat_grid, thresholds, queued, experiment)
        if len(empty):
            level = empty["particle_type"].map(thresholds).to_numpy(float)
            empty["priority"] = np.clip(empty["mass"].to_numpy() / (2 * level), 0.5, 1.0)
            empty["reason"] = [f"uncovered: heatmap mass of a {m:.2f} peak, no pick within a "
                               f"radius" for m in empty["mass"]]
            empty["peak"] = -1
            empty["kind"] = "uncovered"
            tables.append(empty.drop(columns="mass"))
    queue = pd.concat([t for t in tables if len(t)], ignore_index=True) if \
        any(len(t) for t in tables) else queued.iloc[:0]
    factor = queue["particle_type"].map(class_factors(classes)).to_numpy(float)
    queue["priority"] = queue["priority"].to_numpy(float) * factor
    queue = queue.sort_values(["priority", "score"], ascending=[False, False], kind="stable")
    queue = queue.iloc[:max_items].reset_index(drop=True)
    queue["item"] = np.arange(len(queue))
    queue["reason"] = [row["reason"] if row["kind"] == "uncovered" else
                       _peak_reason(row, thresholds) for row in queue.to_dict("records")]
    columns = ["experiment", "particle_type", "x", "y", "z", "score", *QUEUE_COLUMNS]
    return queue[columns + (["view_spread"] if "view_spread" in queue else [])]


# -- decisions -------------------------------------------------------------------------------
@dataclass
class Decision:
    """A reviewer's answer for one queue item: the final class and position (Angstrom)."""

    item: int
    action: str
    particle_type: str
    zyx: np.ndarray

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown review action {self.action!r}; one of {', '.join(ACTIONS)}")
        self.zyx = np.asarray(self.zyx, dtype=float).reshape(3)

    @property
    def role(self) -> str:
        return NEGATIVE if self.action == REJECT else POSITIVE


@dataclass
class Review:
    """A queue and the decisions taken on it so far (one per item; the last one counts)."""

    queue: pd.DataFrame
    decisions: dict[int, Decision] = field(default_factory=dict)

    @property
    def reviewed(self) -> int:
        return len(self.decisions)

    def progress(self) -> str:
        return f"{self.reviewed} of {len(self.queue)} reviewed"

    def item(self, index: int) -> pd.Series:
        return self.queue.iloc[index]

    def decide(self, index: int, action: str, particle_type: str | None = None,
               zyx: ArrayLike | None = None) -> Decision:
        """Record an answer for queue item ``index`` (class and position default to its own)."""
        row = self.item(index)
        decision = Decision(int(row["item"]), action, particle_type or str(row["particle_type"]),
                            row[["z", "y", "x"]].to_numpy(float) if zyx is None else
                            np.asarray(zyx, dtype=float))
        self.decisions[decision.item] = decision
        return decision

    def table(self) -> pd.DataFrame:
        """The decisions as a picks table with ``role`` and where each item came from."""
        rows = []
        for item, d in sorted(self.decisions.items()):
            source = self.queue.iloc[item]
            rows.append({"experiment": source["experiment"], "particle_type": d.particle_type,
                         "x": d.zyx[2], "y": d.zyx[1], "z": d.zyx[0],
                         "score": float(source["score"]), "role": d.role, "item": item,
                         "action": d.action, "source_type": source["particle_type"],
                         "source_x": source["x"], "source_y": source["y"],
                         "source_z": source["z"]})
        columns = ["experiment", "particle_type", "x", "y", "z", "score", "role",
                   *DECISION_COLUMNS]
        return pd.DataFrame(rows, columns=columns)

    def save(self, path: str | Path) -> None:
        """Write the decisions atomically (a kill mid-write leaves the previous file)."""
        with atomic_path(path) as tmp:
            self.table().to_csv(tmp, index=False, float_format="%.3f")

    def restore(self, path: str | Path, tolerance_A: float = 1.0) -> int:
        """Take the saved decisions whose source (class, position) matches an item of this
        queue (within ``tolerance_A``); returns how many. A missing file restores none."""
        table = load_decisions(path)
        if table is None or not len(table) or not len(self.queue):
            return 0
        restored = 0
        sources = table[["source_z", "source_y", "source_x"]].to_numpy(float)
        tree = cKDTree(positions_A(self.queue))
        for action, particle_type, zyx, source_type, source in zip(
                table["action"].astype(str), table["particle_type"].astype(str),
                table[["z", "y", "x"]].to_numpy(float), table["source_type"], sources):
            for index in tree.query_ball_point(source, tolerance_A):
                if self.queue["particle_type"].iloc[index] == source_type:
                    self.decide(index, action, particle_type, zyx)
                    restored += 1
                    break
        return restored


def load_decisions(path: str | Path) -> pd.DataFrame | None:
    """A saved decisions table (validated), or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable review decisions file ({err})") from err
    missing = [c for c in DECISION_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a review decisions file: missing column(s) "
                         f"{', '.join(missing)}")
    table = validate_picks(raw, source=str(path))
    unknown = sorted(set(raw["action"].astype(str)) - set(ACTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown review action(s) {', '.join(unknown)}")
    for column in DECISION_COLUMNS:
        table[column] = raw[column].to_numpy()
    table["source_type"] = table["source_type"].astype(str)
    return table


def review_path(tomogram_source_or_name: str | Path) -> Path:
    """Where a tomogram's review decisions are autosaved: beside its picks autosave."""
    picks = autosave_path(tomogram_source_or_name)
    return picks.with_name(picks.name.removesuffix(".picks.csv") + ".review.csv")


def labels_after_review(picks: pd.DataFrame, review: Review,
                        keep_undecided: bool = True) -> pd.DataFrame:
    """Training labels of a reviewed tomogram: its current picks (those above threshold, with
    a ``peak`` id column) with the decisions applied. Decided peaks are replaced by their
    decision: accepted, moved and re-classed ones are positives at their final class and
    place, rejected ones hard negatives. Undecided picks stay positives (the model's own
    labels, as "use corrections as labels" does) unless ``keep_undecided`` is False: then
    the answers alone are the labels (for a volume prepared with ``partial=True``)."""
    decided = {int(review.queue["peak"].iloc[i]) for i in review.decisions}
    kept = picks[~picks["peak"].isin(list(decided))] if keep_undecided else picks.iloc[:0]
    kept = kept[["experiment", "particle_type", "x", "y", "z", "score"]].assign(role=POSITIVE)
    answers = review.table()[["experiment", "particle_type", "x", "y", "z", "score", "role"]]
    return pd.concat([t for t in (kept, answers) if len(t)] or [kept], ignore_index=True)

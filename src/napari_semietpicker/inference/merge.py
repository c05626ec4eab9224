"""Merging picks tables without duplicates and without losing hand-made picks (Qt-free).

Two rules live here: which picks of one table are new to another (:func:`picks_not_near`,
used when predictions become labels and when an autosave is restored into layers that
already hold picks), and what one tomogram's autosave holds (:func:`autosave_table`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .._writer import concat_picks

#: Two picks of one class closer than this (Angstrom) are the same pick written twice.
SAME_PICK_A = 0.5


def picks_not_near(candidates: pd.DataFrame, existing: pd.DataFrame,
                   distance_A: float | Mapping[str, float] = SAME_PICK_A) -> pd.DataFrame:
    """The rows of ``candidates`` farther than ``distance_A`` (one value, or one per class)
    from every pick of the same class and tomogram in ``existing``."""
    if candidates.empty or existing.empty:
        return candidates.reset_index(drop=True)
    keep = np.ones(len(candidates), dtype=bool)
    zyx = candidates[["z", "y", "x"]].to_numpy(float)
    for (experiment, name), rows in existing.groupby(["experiment", "particle_type"]):
        mine = ((candidates["experiment"] == experiment)
                & (candidates["particle_type"] == name)).to_numpy()
        if not mine.any():
            continue
        limit = distance_A if isinstance(distance_A, int | float) else distance_A[cast(str, name)]
        nearest = cKDTree(rows[["z", "y", "x"]].to_numpy(float)).query(zyx[mine])[0]
        keep[np.flatnonzero(mine)[nearest <= limit]] = False
    return candidates[keep].reset_index(drop=True)


def autosave_table(on_screen: pd.DataFrame, with_layer: Iterable[str],
                   previous: pd.DataFrame | None, unseen: pd.DataFrame | None) -> pd.DataFrame:
    """What one tomogram's autosave holds after a change, losing no pick.

    ``on_screen``: the picks of its picks layers (classes ``with_layer``) - they are the
    truth for their classes. ``previous``: the autosave as it is now; its picks of classes
    without a layer stay (deleting a layer deletes no autosaved pick). ``unseen``: picks of
    an earlier session never shown in a layer (the autosave was not restored, or a layer
    came from a file or a prediction instead); they stay too, once each.
    """
    with_layer = set(with_layer)
    tables = [on_screen]
    if previous is not None and len(previous):
        tables.append(previous[~previous["particle_type"].isin(with_layer)])
    if unseen is not None and len(unseen):
        kept = unseen[unseen["particle_type"].isin(with_layer)]
        tables.append(picks_not_near(kept, on_screen))
    return concat_picks(tables)

"""Picks tables: the CZII CSV and conversions between Angstrom and voxel positions.

A picks table is a :class:`pandas.DataFrame` with columns ``experiment`` (tomogram
name), ``particle_type``, ``x``, ``y``, ``z`` (Angstrom from the volume corner) and
optionally ``score``, ``id`` and ``role``. ``role`` says what a row teaches in training:
``positive`` (the default: a particle of that class is there) or ``negative`` (a reviewer
rejected a pick there: crops are sampled around it and its target stays zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path

REQUIRED_COLUMNS = ("experiment", "particle_type", "x", "y", "z")
OPTIONAL_COLUMNS = ("score", "id", "role")
POSITIVE, NEGATIVE = "positive", "negative"
ROLES = (POSITIVE, NEGATIVE)


def empty_picks() -> pd.DataFrame:
    """An empty picks table with the standard columns."""
    return pd.DataFrame({
        "experiment": pd.Series(dtype=str), "particle_type": pd.Series(dtype=str),
        "x": pd.Series(dtype=float), "y": pd.Series(dtype=float), "z": pd.Series(dtype=float),
    })


def validate_picks(df: pd.DataFrame, source: str = "picks") -> pd.DataFrame:
    """Check columns and values and return a clean copy (strings, finite floats)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(REQUIRED_COLUMNS)} (x, y, z in Angstrom)"
        )
    keep = [*REQUIRED_COLUMNS, *[c for c in OPTIONAL_COLUMNS if c in df.columns]]
    out = df[keep].copy()
    out["experiment"] = out["experiment"].astype(str)
    out["particle_type"] = out["particle_type"].astype(str)
    for column in ("x", "y", "z", *(["score"] if "score" in out else [])):
        values = pd.to_numeric(out[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source}: column {column!r} has a missing or non-numeric value in data row "
                f"{row + 1} ({df[column].iloc[row]!r})"
            )
        out[column] = values.astype(float)
    if "role" in out:
        out["role"] = out["role"].fillna(POSITIVE).astype(str).str.strip().str.lower()
        bad = ~out["role"].isin(ROLES)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{source}: column 'role' has {df['role'].iloc[row]!r} in data row "
                             f"{row + 1}; expected {' or '.join(ROLES)}")
    return out.reset_index(drop=True)


def read_picks_csv(path: str | Path) -> pd.DataFrame:
    """Read a CZII-style picks CSV and validate it (see :func:`validate_picks`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such picks file")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable picks CSV ({err})") from err
    return validate_picks(df, source=str(path))


def write_picks_csv(df: pd.DataFrame, path: str | Path, keep_previous: bool = False) -> None:
    """Write a picks table as CSV atomically; ``keep_previous`` keeps a numbered backup."""
    df = validate_picks(df, source=str(path))
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        df.to_csv(tmp, index=False, float_format="%.3f")


def positions_A(df: pd.DataFrame) -> np.ndarray:
    """Positions as an (N, 3) array in (z, y, x) order, Angstrom."""
    return df[["z", "y", "x"]].to_numpy(dtype=float).reshape(-1, 3)


def picks_from_positions(
    zyx_A: np.ndarray,
    experiment: str,
    particle_type: str | Sequence[str],
    score: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a picks table from (N, 3) z, y, x positions in Angstrom."""
    zyx_A = np.asarray(zyx_A, dtype=float).reshape(-1, 3)
    df = pd.DataFrame({
        "experiment": experiment,
        "particle_type": particle_type,
        "x": zyx_A[:, 2], "y": zyx_A[:, 1], "z": zyx_A[:, 0],
    }, index=range(len(zyx_A)))
    if score is not None:
        df["score"] = np.asarray(score, dtype=float)
    return df


def is_negative(df: pd.DataFrame) -> np.ndarray:
    """Mask of the rows that are hard negatives (``role`` negative); none without the column."""
    if "role" not in df:
        return np.zeros(len(df), dtype=bool)
    return (df["role"] == NEGATIVE).to_numpy()


def select(df: pd.DataFrame, experiment: str | None = None,
           particle_type: str | None = None) -> pd.DataFrame:
    """Rows of one tomogram and/or one class."""
    mask = np.ones(len(df), dtype=bool)
    if experiment is not None:
        mask &= (df["experiment"] == experiment).to_numpy()
    if particle_type is not None:
        mask &= (df["particle_type"] == particle_type).to_numpy()
    return df[mask]

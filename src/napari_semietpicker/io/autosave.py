"""Autosave of picks, so that a crash or a closed window never loses annotations.

Where: one CSV per tomogram in the user data folder
(``platformdirs.user_data_dir("napari-semietpicker")/autosave``, e.g.
``~/.local/share/napari-semietpicker/autosave`` on Linux), or in ``$SEMIETPICKER_AUTOSAVE_DIR``
when set. Not beside the tomogram: tomogram folders are often read-only or shared between
users, and simulated or in-memory tomograms have no folder at all.

Key: a tomogram read from a file is keyed by its name plus a short hash of its absolute path
(two ``TS_01.mrc`` in different projects do not share picks); a tomogram without a file
(sample data) is keyed by its name alone. The file is an ordinary CZII picks CSV (Angstrom),
written atomically, so it can also be opened in napari or given to the CLI.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pandas as pd
import platformdirs

from .picks import empty_picks, read_picks_csv, write_picks_csv
from .tomogram import name_from_path

#: Environment variable that moves the autosave folder (tests, clusters with small homes).
AUTOSAVE_ENV = "SEMIETPICKER_AUTOSAVE_DIR"
APP_NAME = "napari-semietpicker"


def autosave_dir() -> Path:
    """The folder autosaves live in: ``$SEMIETPICKER_AUTOSAVE_DIR`` or the user data folder."""
    given = os.environ.get(AUTOSAVE_ENV, "")
    return Path(given) if given else Path(platformdirs.user_data_dir(APP_NAME)) / "autosave"


def autosave_path(tomogram_source_or_name: str | Path) -> Path:
    """The autosave CSV of a tomogram, given its file (or zarr folder) or, lacking one, its name.

    A string counts as a file when it names an existing path or has a folder part.
    """
    source = Path(tomogram_source_or_name)
    is_file = source.exists() or len(source.parts) > 1
    if is_file:
        digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]
        stem = f"{name_from_path(source)}-{digest}"
    else:
        stem = str(tomogram_source_or_name)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip(".") or "tomogram"
    return autosave_dir() / f"{safe}.picks.csv"


def save_autosave(df: pd.DataFrame, path: str | Path, keep_previous: bool = False) -> None:
    """Write the picks of one tomogram atomically (an empty table writes the header only).

    ``keep_previous`` first copies the existing autosave to ``<name>.bak``: the first save
    of a session does this, so that an earlier session's picks survive even if the new
    session replaces them.
    """
    write_picks_csv(df if len(df.columns) else empty_picks(), path, keep_previous=keep_previous)


def load_autosave(path: str | Path) -> pd.DataFrame | None:
    """The autosaved picks, or None when there is no autosave.

    An unreadable autosave raises ValueError (naming the file) rather than being treated
    as empty, so that the caller can set it aside instead of overwriting it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    return read_picks_csv(path)


def set_aside(path: str | Path) -> Path:
    """Rename an unreadable autosave to ``<name>.unreadable[-N]`` and return the new path."""
    path = Path(path)
    target = path.with_name(path.name + ".unreadable")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.unreadable-{n}")
        n += 1
    os.replace(path, target)
    return target

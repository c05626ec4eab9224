"""Autosave of the annotation dock's picks layers (files through :mod:`..autosave`, the rule
of what a save holds in :func:`..merge.autosave_table`).

Every finished change to a picks layer (a point added, deleted or moved) writes its
tomogram's autosave at once, atomically, so that a crash or a kill right after a click loses
nothing that was on screen. Classes that have no layer keep their autosaved picks, and
autosaved picks of an earlier session that were never shown in a layer are kept too, so a
layer opened from a file or made from predictions never replaces hand picks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import napari
import pandas as pd
from napari.layers import Image

from .._writer import concat_picks
from ..inference.merge import autosave_table
from ..io import autosave
from ..layers import PICKS
from ._layer_tools import layer_meta, layer_picks, role_layers, tomogram_name


class PicksAutosaver:
    """Writes the autosave of a tomogram whenever its picks change.

    ``say`` shows a message (a failed save, an unreadable autosave set aside).
    """

    def __init__(self, viewer: napari.Viewer, say: Callable[[str], None]) -> None:
        self.viewer = viewer
        self._say = say
        self._paths: dict[str, Path] = {}
        self._saved_once: set[Path] = set()
        #: per tomogram: the autosave found at its first use, less the classes shown since
        self._unseen: dict[str, pd.DataFrame] = {}
        self.dirty: set[str] = set()  # tomograms whose last save failed

    def changed(self, tomogram: str) -> None:
        """This tomogram's picks changed: write its autosave now."""
        if tomogram:
            self.dirty.add(tomogram)
            self.save_now()

    def shown(self, tomogram: str, classes: Iterable[str]) -> None:
        """The autosaved picks of these classes are now in layers (the layers rule them)."""
        unseen = self._unseen_of(tomogram, self.path(tomogram))
        self._unseen[tomogram] = unseen[~unseen["particle_type"].isin(set(classes))]

    def save_now(self) -> None:
        """Write the autosave of every tomogram whose picks changed since the last save."""
        failed = set()
        for tomogram in sorted(self.dirty):
            path = self.path(tomogram)
            try:
                autosave.save_autosave(self._table(tomogram, path), path,
                                       keep_previous=path not in self._saved_once)
            except (OSError, ValueError) as err:
                failed.add(tomogram)
                self._say(f"Autosave of {tomogram} failed: {err}")
            else:
                self._saved_once.add(path)
        self.dirty = failed

    def path(self, tomogram: str, image: Image | None = None) -> Path:
        """The autosave of a tomogram: keyed by its Image layer's file when there is one."""
        if tomogram not in self._paths:
            if image is None:
                image = next((layer for layer in self.viewer.layers if isinstance(layer, Image)
                              and tomogram_name(layer) == tomogram), None)
            source = image.source.path if image is not None else None
            self._paths[tomogram] = autosave.autosave_path(source or tomogram)
        return self._paths[tomogram]

    def load(self, path: Path) -> tuple[pd.DataFrame | None, str]:
        """The autosave (or None) and a note; an unreadable one is set aside, never
        overwritten, and the note says where it went."""
        try:
            return autosave.load_autosave(path), ""
        except (OSError, ValueError) as err:
            kept = autosave.set_aside(path)
            return None, f"The autosave could not be read ({err}); it was kept as {kept}"

    def _unseen_of(self, tomogram: str, path: Path,
                   previous: pd.DataFrame | None = None) -> pd.DataFrame:
        if tomogram not in self._unseen:
            if previous is None and path not in self._saved_once:
                previous, _ = self.load(path)
            found = previous if previous is not None else pd.DataFrame(
                columns=["experiment", "particle_type", "x", "y", "z"])
            self._unseen[tomogram] = found[found["experiment"] == tomogram]
        return self._unseen[tomogram]

    def _table(self, tomogram: str, path: Path) -> pd.DataFrame:
        layers = role_layers(self.viewer, tomogram, PICKS)
        on_screen = [layer_picks(layer, layer.translate[-3:], tomogram) for layer in layers]
        previous, note = self.load(path)
        if note:
            self._say(note + ".")
        unseen = self._unseen_of(tomogram, path, previous)
        return autosave_table(concat_picks(on_screen),
                              {layer_meta(layer)["class"] for layer in layers}, previous,
                              unseen)

"""Several tomograms in one viewer, and the role of opened picks layers (for the classes dock).

:class:`TomogramLayout` keeps open tomograms apart: a tomogram opened where another one
lies is placed beside it (its picks follow, :func:`._layer_tools.align_tomogram_layers`),
picks and heatmap layers are named by tomogram once several tomograms are about
(``ribosome picks [TS_01]``, ``ribosome heatmap [TS_01]``), and picks of a tomogram that
is not open are hidden while others are (a CZII CSV holds the picks of many tomograms),
shown again when it opens. In the 3D view picks
are filled balls (shaded spheres), in 2D slices rings.

:class:`LayerRoleRow` shows and changes the role of the selected picks layer: labels to
train on, a reference to evaluate against, or predictions (shown with their scores).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Layer, Points
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from ..layers import PREDICTED, ROLE_HELP, ROLES, picks_layer_name, place_beside, score_text
from ._layer_tools import (
    HEATMAP,
    align_tomogram_layers,
    layer_meta,
    layer_origin,
    tomogram_images,
    tomogram_name,
)
from .lifecycle import DockLifecycle

if TYPE_CHECKING:
    import napari

#: The metadata flag of a layer hidden because its tomogram is not open.
HIDDEN_ABSENT = "hidden_while_tomogram_absent"
#: The metadata flag of points filled for the 3D view (:func:`fill_in_3d`).
SOLID = "filled_for_3d"
#: napari's suffix for a repeated layer name (``ribosome picks [1]``).
_NAPARI_COPY = re.compile(r" \[\d+\]$")


def is_role_layer(layer: object) -> bool:
    """A Points layer of ours with a class, a tomogram and one of the picks roles."""
    meta = layer_meta(layer)
    return isinstance(layer, Points) and "class" in meta and "tomogram" in meta \
        and meta.get("role") in ROLES


def is_heatmap_layer(layer: object) -> bool:
    """An Image layer of ours showing one class's heatmap of one tomogram."""
    meta = layer_meta(layer)
    return isinstance(layer, Image) and meta.get("role") == HEATMAP and "class" in meta \
        and "tomogram" in meta


def image_extent(image: Image) -> np.ndarray:
    """A tomogram image's size in world units (z, y, x Angstrom)."""
    return np.asarray(image.level_shapes[0][-3:], dtype=float) * np.asarray(image.scale[-3:])


class TomogramLayout:
    """Places, names and shows the layers of several tomograms (see the module notes)."""

    def __init__(self, viewer: napari.Viewer, lifecycle: DockLifecycle,
                 say: Callable[[str], None]) -> None:
        self.viewer = viewer
        self._say = say
        lifecycle.connect(viewer.layers.events.inserted, self._on_inserted)
        lifecycle.connect(viewer.layers.events.removed, lambda event: self.update())
        lifecycle.connect(viewer.dims.events.ndisplay, lambda event: self.update())
        self.update()

    def _on_inserted(self, event: Any) -> None:  # a napari event (dynamic fields)
        layer = event.value
        if isinstance(layer, Image) and layer in tomogram_images(self.viewer):
            self.place(layer)
        self.update()

    def place(self, image: Image) -> None:
        """Move a tomogram that lies over another one (by another name) beside it."""
        others = [(layer_origin(i), image_extent(i)) for i in tomogram_images(self.viewer)
                  if i is not image and tomogram_name(i) != tomogram_name(image)]
        moved = place_beside(layer_origin(image), image_extent(image), others)
        if moved is None:
            return
        translate = np.asarray(image.translate, dtype=float)
        translate[-3:] = moved
        image.translate = tuple(translate)
        align_tomogram_layers(self.viewer)  # its picks follow it
        self._say(f"{image.name} is placed beside the other tomogram(s), not over them.")

    def update(self) -> None:
        """Name picks and heatmap layers by tomogram when there are several; hide the picks
        of tomograms that are not open (while one is), show them when theirs opens."""
        open_names = {tomogram_name(i) for i in tomogram_images(self.viewer)}
        ours = [layer for layer in self.viewer.layers if is_role_layer(layer)]
        heatmaps = [layer for layer in self.viewer.layers if is_heatmap_layer(layer)]
        tomograms = open_names | {str(layer_meta(layer)["tomogram"])
                                  for layer in [*ours, *heatmaps]}
        for layer in heatmaps:
            self._name(layer, by_tomogram=len(tomograms) > 1)
        solid = self.viewer.dims.ndisplay == 3
        for layer in ours:
            self._name(layer, by_tomogram=len(tomograms) > 1)
            fill_in_3d(layer, solid)
            meta = layer_meta(layer)
            if open_names and meta["tomogram"] not in open_names:
                if layer.visible:
                    layer.visible = False
                    meta[HIDDEN_ABSENT] = True
            elif meta.pop(HIDDEN_ABSENT, False):
                layer.visible = True

    @staticmethod
    def _name(layer: Layer, by_tomogram: bool) -> None:
        """The default name for the layer's class, role and tomogram; a name the user gave
        is kept."""
        meta = layer_meta(layer)
        cls, role, tomogram = str(meta["class"]), str(meta["role"]), str(meta["tomogram"])
        defaults = {picks_layer_name(cls, role), picks_layer_name(cls, role, tomogram)}
        if _NAPARI_COPY.sub("", layer.name) not in defaults:
            return
        wanted = picks_layer_name(cls, role, tomogram if by_tomogram else None)
        if layer.name != wanted:
            layer.name = wanted


def fill_in_3d(layer: Points, solid: bool) -> None:
    """Fill the points with their border colour in the 3D view, where the rings drawn in
    2D slices are hard to read and spherical shading needs a face; hollow again in 2D."""
    meta = layer_meta(layer)
    if bool(meta.get(SOLID)) == solid:
        return
    meta[SOLID] = solid
    color = str(meta.get("color", "white"))
    layer.current_face_color = color if solid else "transparent"
    if len(layer.data):
        layer.face_color = layer.border_color if solid else "transparent"


def set_role(layer: Points, role: str) -> None:
    """Give a picks layer another role: its name and, for predictions, score labels follow."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    meta = layer_meta(layer)
    old_name = picks_layer_name(str(meta["class"]), str(meta["role"]))
    meta["role"] = role
    if layer.name.startswith(old_name):  # keep the tomogram part and napari's suffix
        layer.name = picks_layer_name(str(meta["class"]), role) + layer.name[len(old_name):]
    layer.text = score_text(str(meta.get("color", "white"))) if role == PREDICTED else None


class LayerRoleRow(QWidget):
    """"Selected layer: [labels to train on | reference ... | predictions ...]"."""

    def __init__(self, viewer: napari.Viewer, lifecycle: DockLifecycle,
                 on_changed: Callable[[Points, str], None]) -> None:
        super().__init__()
        self.viewer = viewer
        self._on_changed = on_changed
        self.combo = QComboBox()
        self.combo.addItems([ROLE_HELP[role] for role in ROLES])
        self.combo.setToolTip("What the selected picks layer is for: labels are trained on "
                              "and autosaved, a reference is evaluated against, predictions "
                              "show their scores")
        self.combo.textActivated.connect(self._on_chosen)
        self.label = QLabel("Selected layer is")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.combo, 1)
        lifecycle.connect(viewer.layers.selection.events.active, lambda event: self.follow())
        self.follow()

    def layer(self) -> Points | None:
        """The selected layer when it is a picks layer of ours."""
        active = self.viewer.layers.selection.active
        return active if is_role_layer(active) else None  # type: ignore[return-value]

    def follow(self) -> None:
        """Show the selected layer's role (disabled when no picks layer is selected)."""
        layer = self.layer()
        self.combo.setEnabled(layer is not None)
        if layer is not None:
            self.combo.setCurrentIndex(ROLES.index(layer_meta(layer)["role"]))

    def choose(self, role: str) -> None:
        """Give the selected picks layer ``role`` (what choosing it in the list does)."""
        layer = self.layer()
        if layer is None or layer_meta(layer)["role"] == role:
            return
        old = str(layer_meta(layer)["role"])
        set_role(layer, role)
        self._on_changed(layer, old)

    def _on_chosen(self, text: str) -> None:
        self.choose(next(role for role in ROLES if ROLE_HELP[role] == text))

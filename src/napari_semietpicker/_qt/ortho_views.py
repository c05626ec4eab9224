"""Orthogonal views for annotating in 3D: xz and yz canvases beside napari's xy canvas.

napari draws one canvas per window, so each extra view is a :class:`napari.qt.QtViewer` of
its own :class:`~napari.components.ViewerModel` with the axes in another order. Its layers
mirror the main viewer's: images share their arrays (nothing is copied), and points follow
both ways, so that a pick clicked in the xz view lands in the main layer (and its autosave).
The slice position is shared: moving through y in the xz view moves the main view too.
Only what annotation needs is mirrored (data, visibility, opacity, contrast, frame, mode,
the selected layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.components import ViewerModel
from napari.layers import Layer, Points
from napari.qt import QtViewer
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QLabel, QSplitter, QVBoxLayout, QWidget

from .lifecycle import DockLifecycle

if TYPE_CHECKING:
    import napari

#: (title, axis order) of each extra view; the last two axes of an order are drawn, z down
#: and x (xz) or y (yz) across.
VIEWS = (("xz", (1, 0, 2)), ("yz", (2, 0, 1)))
#: The views' height: enough to place picks, leaving the xy canvas most of a laptop screen.
VIEW_HEIGHT = 180
#: Layer properties copied from the main viewer's layers to the views' copies.
MIRRORED = ("visible", "opacity", "contrast_limits", "scale", "translate", "mode")


class OrthoViews(QWidget):
    """The xz and yz views of the main viewer's layers (see the module notes)."""

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.models = [ViewerModel(title=title) for title, _ in VIEWS]
        self.canvases = [QtViewer(model, show_welcome_screen=False) for model in self.models]
        self._copies: dict[int, list[Layer]] = {}  # id(main layer) -> its copy in each view
        self._main_of: dict[int, Layer] = {}  # id(copy) -> main layer
        self._syncing = False
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for (title, _), canvas in zip(VIEWS, self.canvases):
            box = QWidget()
            column = QVBoxLayout(box)
            column.setContentsMargins(0, 0, 0, 0)
            column.addWidget(QLabel(title))
            column.addWidget(canvas, 1)
            splitter.addWidget(box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self.setMinimumHeight(VIEW_HEIGHT)
        self.lifecycle = DockLifecycle(self, self._close_canvases)
        layers = viewer.layers
        self.lifecycle.connect(layers.events.inserted, lambda e: self._mirror(e.value))
        self.lifecycle.connect(layers.events.removed, lambda e: self._forget(e.value))
        self.lifecycle.connect(layers.selection.events.active, lambda e: self._select())
        self.lifecycle.connect(viewer.dims.events.current_step, self._on_main_step)
        # slices as thick as the main view's, so that picks show in the views' slices too
        self.lifecycle.connect(viewer.dims.events.margin_left, self._on_main_step)
        self.lifecycle.connect(viewer.dims.events.margin_right, self._on_main_step)
        for model in self.models:
            model.dims.events.current_step.connect(self._on_view_step)
        for layer in layers:
            self._mirror(layer)
        self._select()

    def copies(self, layer: Layer) -> list[Layer]:
        """The layer's copy in each view (empty when it is not mirrored)."""
        return list(self._copies.get(id(layer), []))

    # -- mirroring layers ------------------------------------------------------------------
    def _mirror(self, layer: Layer) -> None:
        if id(layer) in self._copies:
            return
        copies = []
        for model, (_, order) in zip(self.models, VIEWS):
            copy = Layer.create(*layer.as_layer_data_tuple())
            model.layers.append(copy)
            if model.dims.ndim == len(order):
                model.dims.order = order
            self._main_of[id(copy)] = layer
            if isinstance(copy, Points):
                copy.events.data.connect(self._on_view_data)
            copies.append(copy)
        self._copies[id(layer)] = copies
        for name in MIRRORED:
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                self.lifecycle.connect(emitter, self._on_main_property)
        if isinstance(layer, Points):
            self.lifecycle.connect(layer.events.data, self._on_main_data)
        self._on_main_step()

    def _forget(self, layer: Layer) -> None:
        for model, copy in zip(self.models, self._copies.pop(id(layer), [])):
            self._main_of.pop(id(copy), None)
            if copy in model.layers:
                model.layers.remove(copy)

    def _on_main_property(self, event: Any) -> None:  # a napari event (dynamic fields)
        name = event.type
        for copy in self._copies.get(id(event.source), []):
            value = getattr(event.source, name)
            if name == "mode" and value not in ("pan_zoom", "add", "select"):
                continue  # the views only add, select and pan
            self._quietly(setattr, copy, name, value)

    def _on_main_data(self, event: Any) -> None:
        if self._syncing or str(getattr(event, "action", "changed")).endswith("ing"):
            return
        for copy in self._copies.get(id(event.source), []):
            self._quietly(setattr, copy, "data", event.source.data)

    def _on_view_data(self, event: Any) -> None:
        """A pick added, moved or deleted in a view: the main layer (and the other view)
        take it."""
        if self._syncing or str(getattr(event, "action", "changed")).endswith("ing"):
            return
        main = self._main_of.get(id(event.source))
        if main is None:
            return
        self._quietly(setattr, main, "data", event.source.data)
        for copy in self._copies.get(id(main), []):
            if copy is not event.source:
                self._quietly(setattr, copy, "data", event.source.data)

    def _select(self) -> None:
        active = self.viewer.layers.selection.active
        for view, model in enumerate(self.models):
            copies = self._copies.get(id(active)) if active is not None else None
            model.layers.selection.active = copies[view] if copies else None

    # -- the shared slice --------------------------------------------------------------------
    def _on_main_step(self, event: Any = None) -> None:
        dims = self.viewer.dims
        step = dims.current_step
        for model in self.models:
            if model.dims.ndim != len(step):
                continue
            if model.dims.current_step != step:
                self._quietly(setattr, model.dims, "current_step", step)
            model.dims.margin_left, model.dims.margin_right = dims.margin_left, dims.margin_right

    def _on_view_step(self, event: Any) -> None:
        if self._syncing:
            return
        step = event.value
        if self.viewer.dims.ndim == len(step):
            self.viewer.dims.current_step = step  # and on to the other view

    def _quietly(self, set_value: Any, target: Any, name: str, value: Any) -> None:
        """Set a value without its change echoing back."""
        self._syncing = True
        try:
            set_value(target, name, value)
        finally:
            self._syncing = False

    def _close_canvases(self) -> None:
        for model in self.models:
            model.dims.events.current_step.disconnect(self._on_view_step)
            model.layers.clear()
        for canvas in self.canvases:
            canvas.close()


class OrthoToggle(QCheckBox):
    """"Orthogonal views (xz, yz)": shows :class:`OrthoViews` in a dock below the canvas."""

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__("Orthogonal views (xz, yz)")
        self.setToolTip("Two more canvases that slice the tomogram along y and x; picks "
                        "clicked there go to the same layers")
        self.viewer = viewer
        self.views: OrthoViews | None = None
        self._dock: QWidget | None = None
        self.toggled.connect(self.show_views)

    def show_views(self, on: bool) -> None:
        """Open (``on``) or close the orthogonal views."""
        if on and self.views is None:
            self.views = OrthoViews(self.viewer)
            self._dock = self.viewer.window.add_dock_widget(
                self.views, name="Orthogonal views", area="bottom")
        elif not on and self.views is not None:
            views, dock, self.views, self._dock = self.views, self._dock, None, None
            views.lifecycle.close()
            if dock is not None:
                self.viewer.window.remove_dock_widget(dock)
        if self.isChecked() != on:
            self.setChecked(on)

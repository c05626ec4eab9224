"""The training dock's choice of tomograms: labelled ones (with picks layers) and unlabelled
ones (viewer images or files) ticked in two lists, and the classes their picks stand for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image, Layer, Points
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..io.tomogram import Tomogram
from ..layers import PICKS
from ._layer_tools import (
    align_tomogram_layers,
    classes_of_layers,
    image_tomogram,
    layer_meta,
    role_layers,
    tomogram_images,
    tomogram_name,
)


def list_items(widget: QListWidget) -> list[QListWidgetItem]:
    """The items of a list, in order."""
    items = [widget.item(i) for i in range(widget.count())]
    return [item for item in items if item is not None]  # every row up to count() has one


def checked_keys(widget: QListWidget) -> set[str]:
    """Keys (image layer names or file paths) of the ticked items of a list."""
    return {item.data(Qt.ItemDataRole.UserRole) for item in list_items(widget)
            if item.checkState() == Qt.CheckState.Checked}


def _add_item(widget: QListWidget, text: str, key: str, ticked: bool) -> QListWidgetItem:
    item = QListWidgetItem(text)
    item.setData(Qt.ItemDataRole.UserRole, key)
    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
    item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
    widget.addItem(item)
    return item


class TrainingSets(QWidget):
    """Two ticked lists of tomograms (labelled, unlabelled) that follow the viewer's layers."""

    def __init__(self, viewer: napari.Viewer, connect: Callable[[object, Callable], None],
                 parent: QWidget | None = None) -> None:
        """``connect(event, callback)`` connects viewer events for the owning dock, which
        disconnects them when it closes."""
        super().__init__(parent)
        self.viewer = viewer
        self._connect = connect
        self.files: list[Path] = []
        self._picks_count: dict[str, int] = {}  # picks of each listed tomogram, last refresh
        self._build()
        for layer in self.viewer.layers:
            self._watch(layer)
        connect(self.viewer.layers.events.inserted, self._on_layers_changed)
        connect(self.viewer.layers.events.removed, self._on_layers_changed)
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Labelled tomograms (with picks layers):"))
        self.labelled_list = QListWidget()
        self.labelled_list.setMaximumHeight(90)
        self.labelled_list.itemChanged.connect(lambda _: self._show_classes())
        layout.addWidget(self.labelled_list)
        layout.addWidget(QLabel("Unlabelled tomograms (co-training):"))
        self.unlabelled_list = QListWidget()
        self.unlabelled_list.setMaximumHeight(90)
        layout.addWidget(self.unlabelled_list)
        self.add_files_button = QPushButton("Add unlabelled files…")
        self.add_files_button.clicked.connect(self._choose_files)
        layout.addWidget(self.add_files_button)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        layout.addWidget(self.classes_label)

    # -- following the layers -------------------------------------------------------------------
    def _watch(self, layer: Layer) -> None:
        """Follow renames of a layer and point additions/deletions of picks layers."""
        self._connect(layer.events.name, self.refresh)
        if isinstance(layer, Points) and layer_meta(layer).get("role") == PICKS:
            self._connect(layer.events.data, self._on_picks_edited)

    def _on_layers_changed(self, event: Any) -> None:  # a napari event (dynamic fields)
        if event.type == "inserted":
            align_tomogram_layers(self.viewer)
            self._watch(event.value)
        self.refresh()

    def _on_picks_edited(self, event: object) -> None:
        if str(getattr(event, "action", "")) in ("added", "removed"):
            self.refresh()

    def refresh(self, event: object = None) -> None:
        """Rebuild the tomogram lists from the viewer's layers, keeping the user's ticks.

        A tomogram is ticked as labelled when it gains its first picks (listed with picks,
        or picks clicked into a listed one); unticking it is then respected. A file added
        for the first time is ticked as unlabelled.
        """
        was_labelled = checked_keys(self.labelled_list)
        was_unlabelled = checked_keys(self.unlabelled_list)
        listed = {item.data(Qt.ItemDataRole.UserRole)
                  for item in list_items(self.unlabelled_list)}
        self.labelled_list.blockSignals(True)
        self.labelled_list.clear()
        self.unlabelled_list.clear()
        for image in tomogram_images(self.viewer):
            layers = role_layers(self.viewer, tomogram_name(image), PICKS)
            total = sum(len(p.data) for p in layers)
            counts = ", ".join(f"{layer_meta(p)['class']} {len(p.data)}" for p in layers)
            text = f"{image.name}: {total} picks ({counts})" if layers else \
                f"{image.name}: no picks layers"
            gained = total > 0 and self._picks_count.get(image.name, 0) == 0
            self._picks_count[image.name] = total
            _add_item(self.labelled_list, text, image.name,
                      image.name in was_labelled or gained)
            _add_item(self.unlabelled_list, image.name, image.name,
                      image.name in was_unlabelled)
        for path in self.files:
            key = str(path)
            item = _add_item(self.unlabelled_list, f"file: {path.name}", key,
                             key in was_unlabelled or key not in listed)
            item.setToolTip(key)
        self.labelled_list.blockSignals(False)
        self._show_classes()

    # -- choosing -------------------------------------------------------------------------------
    def set_checked(self, labelled: Iterable[str] = (), unlabelled: Iterable[str] = ()) -> None:
        """Tick exactly these image layer names (or file paths) in the two lists."""
        for widget, names in ((self.labelled_list, set(labelled)),
                              (self.unlabelled_list, set(unlabelled))):
            for item in list_items(widget):
                checked = item.data(Qt.ItemDataRole.UserRole) in names
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def add_unlabelled_files(self, paths: Iterable[str | Path]) -> None:
        """Add tomogram files (MRC, zarr) to the unlabelled list, ticked."""
        for path in paths:
            path = Path(path)
            if path not in self.files:
                self.files.append(path)
        self.refresh()

    def _choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Unlabelled tomograms", "", "Tomograms (*.mrc *.rec *.map *.zarr);;All (*)")
        if paths:
            self.add_unlabelled_files(paths)

    # -- what is chosen -------------------------------------------------------------------------
    def labelled_images(self) -> list[Image]:
        names = checked_keys(self.labelled_list)
        return [image for image in tomogram_images(self.viewer) if image.name in names]

    def picks_layers(self, images: Iterable[Image]) -> list[Points]:
        return [layer for image in images
                for layer in role_layers(self.viewer, tomogram_name(image), PICKS)]

    def unlabelled(self, exclude: Iterable[str] = ()) -> list[Tomogram | Path]:
        """The ticked unlabelled tomograms (viewer images, then files), except ``exclude``."""
        chosen = checked_keys(self.unlabelled_list) - set(exclude)
        found: list[Tomogram | Path] = [image_tomogram(image)
                                        for image in tomogram_images(self.viewer)
                                        if image.name in chosen]
        return found + [path for path in self.files if str(path) in chosen]

    def _show_classes(self) -> None:
        try:
            classes = classes_of_layers(self.picks_layers(self.labelled_images()))
        except ValueError as err:
            self.classes_label.setText(f"Classes: {err}")
            return
        self.classes_label.setText(
            "Classes: " + (", ".join(f"{c.name} ({c.radius_A:g} Å)" for c in classes)
                           or "none yet (add picks layers with the annotation dock)"))

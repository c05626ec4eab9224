"""Classes and annotation dock: pick the tomogram and the particle classes, make one Points
layer per class, count picks live and autosave them.

The dock is a thin layer: classes come from :mod:`..classes`, layers from :mod:`..layers`
(through :mod:`._layer_tools`), files through :mod:`.autosaver`. What it has chosen lives
in :class:`AnnotationState` (Qt-free), which other docks read and listen to.

Slices: napari (>= 0.9) draws a point only in slices within the slice thickness, so the dock
makes slices at least one particle radius thick on each side whenever a layer of particles
appears; picks layers it makes scale each point to the sphere's cross-section in the slice.

Several tomograms and opened picks files (:mod:`.tomogram_layout`): tomograms are kept apart
and their picks named by tomogram; the role of the selected picks layer (labels, reference,
predictions) can be changed.

Autosave (:mod:`.autosaver`): each change to a picks layer schedules a save of its
tomogram's picks one second later, and pending saves are written when a picks layer is
removed or the viewer window closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from napari.layers import Image, Layer, Points
from psygnal import evented
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QShowEvent
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..classes import (
    CLASS_PRESETS,
    DEFAULT_RADIUS_A,
    ParticleClass,
    check_unique_names,
    classes_for_names,
    distinct_color,
    load_classes,
    save_classes,
)
from ..inference.merge import picks_not_near
from ..io.picks import empty_picks
from ..layers import PICKS, REFERENCE, ROLE_HELP, picks_layer_name
from ._layer_tools import (
    add_points_layer,
    align_to_tomogram,
    align_tomogram_layers,
    ensure_thick_slices,
    image_voxel_size,
    is_picks,
    layer_meta,
    layer_origin,
    layer_picks,
    role_layers,
    to_layer_data,
    tomogram_name,
)
from ._widgets import StatusLabel, fit_table_height, scrolled_layout, set_combo_items
from .autosaver import PicksAutosaver
from .lifecycle import DockLifecycle
from .ortho_views import OrthoToggle
from .tomogram_layout import LayerRoleRow, TomogramLayout

if TYPE_CHECKING:
    from typing import ClassVar, Protocol

    import napari
    from psygnal import SignalInstance

    class _AnnotationEvents(Protocol):
        classes: SignalInstance
        tomogram: SignalInstance

CUSTOM = "custom"
NAME, RADIUS, WEIGHT, COLOR, COUNT = range(5)
HEADERS = ("Name", "Radius (Å)", "Weight", "Colour", "Picks")


@evented
@dataclass
class AnnotationState:
    """The classes and tomogram chosen in the annotation dock, for other docks (Qt-free).

    ``state.events.classes`` and ``state.events.tomogram`` fire when they change.
    """

    classes: list[ParticleClass] = field(default_factory=lambda: list(CLASS_PRESETS["czii"]))
    tomogram: str = ""
    if TYPE_CHECKING:
        events: ClassVar[_AnnotationEvents]  # made by @evented, per instance


class AnnotationWidget(QWidget):
    """Dock to choose tomogram and classes, make picks layers, count and autosave picks."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = AnnotationState()
        #: Fires with the new class list (psygnal), for other docks.
        self.classes_changed = self.state.events.classes
        self._build()
        self.autosaver = PicksAutosaver(self.viewer, self._say)

        self.state.events.classes.connect(self._on_classes_changed)
        # closing the dock or its window saves what is pending and disconnects the viewer
        self.lifecycle = DockLifecycle(self, self._on_close)
        layers = self.viewer.layers
        self.lifecycle.connect(layers.events.inserted, self._on_inserted)
        self.lifecycle.connect(layers.events.removing, self._on_removing)
        self.lifecycle.connect(layers.events.removed, self._on_layers_changed)
        for layer in layers:
            self._watch(layer)
        self.tomogram_layout = TomogramLayout(self.viewer, self.lifecycle, self._say)
        self.role_row = LayerRoleRow(self.viewer, self.lifecycle, self._on_role_changed)
        self.ortho_toggle = OrthoToggle(self.viewer)
        for row in (self.role_row, self.ortho_toggle):
            self._content.insertWidget(self._content.indexOf(self.status), row)
        self._fill_table()
        self._refresh_tomograms()

    # -- public API -------------------------------------------------------------------
    @property
    def classes(self) -> list[ParticleClass]:
        """The current particle classes (a copy)."""
        return list(self.state.classes)

    def set_classes(self, classes: list[ParticleClass]) -> None:
        """Replace the classes (names must be unique); the table and layers follow."""
        check_unique_names(classes)
        self.state.classes = list(classes)

    def set_preset(self, name: str) -> None:
        """Use a preset's classes (``"czii"``)."""
        self.set_classes(list(CLASS_PRESETS[name]))

    def load_classes_file(self, path: str | Path) -> bool:
        """Read classes from a JSON/YAML file; a bad file is reported, not raised."""
        try:
            self.set_classes(load_classes(Path(path)))
        except ValueError as err:
            self._say(f"Could not load classes: {err}")
            return False
        self._say(f"Loaded {len(self.state.classes)} classes from {Path(path).name}.")
        return True

    def current_image(self) -> Image | None:
        """The Image layer chosen as the tomogram, if any."""
        name = self.tomogram_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Image) else None

    def make_picks_layers(self) -> list[Points]:
        """One Points layer per class for the chosen tomogram, restoring autosaved picks.

        Classes that already have a picks layer for this tomogram are left alone. Classes
        found in the autosave but not in the class list are added to it, so that restored
        picks always have a layer.
        """
        image = self.current_image()
        if image is None:
            self._say("Open a tomogram first (File > Open, or File > Open Sample).")
            return []
        tomogram = tomogram_name(image)
        path = self.autosaver.path(tomogram, image)
        restored, note = self.autosaver.load(path)
        notes = [note] if note else []
        if restored is not None and len(restored):
            restored = restored[restored["experiment"] == tomogram]
            known = {c.name for c in self.state.classes}
            extra = [c for c in classes_for_names(pd.unique(restored["particle_type"]))
                     if c.name not in known]
            if extra:
                self.set_classes([*self.state.classes, *extra])
                notes.append(f"Added classes {', '.join(c.name for c in extra)} from the autosave")
        existing = {layer_meta(layer)["class"]: layer
                    for layer in role_layers(self.viewer, tomogram, PICKS)}
        source = restored if restored is not None else empty_picks()
        made: list[Points] = []
        n_merged = 0
        for cls in self.state.classes:
            if cls.name in existing:  # the layer keeps its picks and gains the autosaved ones
                n_merged += self._merge_restored(existing[cls.name], source, image)
                continue
            made.append(add_points_layer(
                self.viewer, source, cls, tomogram, PICKS, voxel_size=image_voxel_size(image),
                shape=[int(s) for s in image.level_shapes[0]]))
        self.autosaver.shown(tomogram, [c.name for c in self.state.classes])
        if made:
            self.viewer.layers.selection.active = made[0]
            made[0].mode = "add"
        n_restored = sum(len(layer.data) for layer in made) + n_merged
        message = f"Made {len(made)} picks layer(s) for {tomogram}"
        if existing:
            message += f" ({len(existing)} class(es) already had one)"
        if n_restored:
            notes.insert(0, f"Restored {n_restored} picks from the autosave {path}")
        self._say(". ".join([message, *notes]) + ".")
        self._update_counts()
        return made

    def _merge_restored(self, layer: Points, restored: pd.DataFrame, image: Image) -> int:
        """Add the autosaved picks of the layer's class that it lacks; return how many."""
        origin = layer_origin(image)
        own = restored[restored["particle_type"] == layer_meta(layer)["class"]]
        new = picks_not_near(own, layer_picks(layer, origin, tomogram_name(image)))
        if len(new):
            layer.add(to_layer_data(layer, new[["z", "y", "x"]].to_numpy(float) + origin))
        return len(new)

    def counts(self) -> dict[str, int]:
        """Picks per class for the chosen tomogram."""
        image = self.current_image()
        result = {c.name: 0 for c in self.state.classes}
        if image is None:
            return result
        for layer in role_layers(self.viewer, tomogram_name(image), PICKS):
            name = layer_meta(layer)["class"]
            result[name] = result.get(name, 0) + len(layer.data)
        return result

    def _on_close(self) -> None:
        self.ortho_toggle.show_views(False)
        self.save_now()

    def save_now(self) -> None:
        """Write the autosave of every tomogram whose picks changed since the last save."""
        self.autosaver.save_now()

    # -- UI ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.tomogram_combo = QComboBox()
        self.tomogram_combo.currentTextChanged.connect(self._on_tomogram_changed)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([*CLASS_PRESETS, CUSTOM])
        self.preset_combo.textActivated.connect(self._on_preset_chosen)
        load_button = QPushButton("Load…")
        load_button.setToolTip("Read classes from a JSON or YAML file (name, radius_A, ...)")
        load_button.clicked.connect(self._ask_load)
        save_button = QPushButton("Save…")
        save_button.setToolTip("Write these classes to a JSON file")
        save_button.clicked.connect(self._ask_save)

        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        rows_header, header = self.table.verticalHeader(), self.table.horizontalHeader()
        assert rows_header is not None and header is not None  # a table always has both
        rows_header.setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemChanged.connect(self._on_table_edited)
        self.table.cellDoubleClicked.connect(self._on_cell_double_clicked)
        add_button = QPushButton("Add class")
        add_button.clicked.connect(self._add_class)
        remove_button = QPushButton("Remove class")
        remove_button.setToolTip("Remove the selected classes (their layers and picks stay)")
        remove_button.clicked.connect(self._remove_selected)

        self.make_button = QPushButton("Make picks layers")
        self.make_button.setToolTip("One Points layer per class for the chosen tomogram; "
                                    "autosaved picks of this tomogram are restored")
        self.make_button.clicked.connect(self.make_picks_layers)  # type: ignore[arg-type]  # its result is unused
        self.status = StatusLabel()

        grid = QGridLayout()
        grid.addWidget(QLabel("Tomogram"), 0, 0)
        grid.addWidget(self.tomogram_combo, 0, 1, 1, 3)
        grid.addWidget(QLabel("Classes"), 1, 0)
        grid.addWidget(self.preset_combo, 1, 1)
        grid.addWidget(load_button, 1, 2)
        grid.addWidget(save_button, 1, 3)
        buttons = QHBoxLayout()
        buttons.addWidget(add_button)
        buttons.addWidget(remove_button)
        layout = self._content = scrolled_layout(self)
        layout.addLayout(grid)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.make_button)
        layout.addWidget(self.status)

    def _fill_table(self) -> None:
        counts = self.counts()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.state.classes))
        for row, cls in enumerate(self.state.classes):
            values = (cls.name, f"{cls.radius_A:g}", f"{cls.weight:g}", cls.color,
                      str(counts.get(cls.name, 0)))
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                if column == COLOR:  # chosen in a colour dialog (double-click)
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)  # type: ignore[arg-type]  # PyQt5's stub: ~flag is int
                    item.setToolTip("Double-click to choose a colour")
                    item.setBackground(QColor(cls.color))
                    item.setForeground(QColor("black" if QColor(cls.color).lightness() > 128
                                              else "white"))
                if column == COUNT:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)  # type: ignore[arg-type]  # PyQt5's stub: ~flag is int
                    item.setTextAlignment(
                        int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self._fit_table_width()
        preset = next((k for k, v in CLASS_PRESETS.items() if list(v) == self.state.classes),
                      CUSTOM)
        self.preset_combo.setCurrentText(preset)

    def _classes_from_table(self) -> list[ParticleClass]:
        classes = []
        for row in range(self.table.rowCount()):
            texts = [self._cell(row, c).text().strip() for c in (NAME, RADIUS, WEIGHT, COLOR)]
            color = QColor(texts[3])
            if not color.isValid():
                raise ValueError(f"row {row + 1}: {texts[3]!r} is not a colour (e.g. #ff8800)")
            try:
                radius, weight = float(texts[1]), float(texts[2])
            except ValueError as err:
                raise ValueError(f"row {row + 1}: radius and weight must be numbers") from err
            classes.append(ParticleClass(texts[0], radius, weight, color.name()))
        check_unique_names(classes)
        return classes

    def _fit_table_width(self) -> None:
        """Make the dock wide enough for the whole table (napari's style sets the font late)."""
        self.table.resizeColumnsToContents()
        bar, header = self.table.verticalScrollBar(), self.table.horizontalHeader()
        assert bar is not None and header is not None  # a table always has both
        scrollbar = bar.sizeHint().width()
        self.table.setMinimumWidth(header.length() + scrollbar
                                   + 2 * self.table.frameWidth())
        self.table.resizeRowsToContents()
        fit_table_height(self.table)

    def _cell(self, row: int, column: int) -> QTableWidgetItem:
        item = self.table.item(row, column)
        assert item is not None  # _fill_table sets every cell
        return item

    def showEvent(self, event: QShowEvent | None) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._fit_table_width()

    def _say(self, message: str) -> None:
        self.status.say(message)

    # -- reactions --------------------------------------------------------------------
    def _on_cell_double_clicked(self, row: int, column: int) -> None:
        if column != COLOR:
            return
        cls = self.state.classes[row]
        color = QColorDialog.getColor(QColor(cls.color), self, f"Colour of {cls.name}")
        if color.isValid():  # invalid when the dialog is cancelled
            self._cell(row, COLOR).setText(color.name())  # applied like any edit

    def _on_table_edited(self, item: QTableWidgetItem) -> None:
        if item.column() == COUNT:
            return
        try:
            classes = self._classes_from_table()
        except ValueError as err:
            self._say(f"Not changed: {err}")
            self._fill_table()
            return
        old = self.state.classes
        for before, after in zip(old, classes):
            if before.name != after.name:
                self._rename_class(before.name, after.name)
        self.set_classes(classes)

    def _on_classes_changed(self, classes: list[ParticleClass]) -> None:
        self._fill_table()
        by_name: dict[str | None, ParticleClass] = {c.name: c for c in classes}
        for layer in self.viewer.layers:
            meta = layer_meta(layer)
            cls = by_name.get(meta.get("class")) if isinstance(layer, Points) else None
            if cls is None or (meta.get("radius_A"), meta.get("color")) == (cls.radius_A,
                                                                              cls.color):
                continue
            meta.update(radius_A=cls.radius_A, color=cls.color)
            diameter = 2 * cls.radius_A / float(layer.scale[-1])  # in the layer's data units
            layer.size = diameter
            layer.current_size = diameter
            layer.border_color = cls.color
            layer.current_border_color = cls.color

    def _rename_class(self, old: str, new: str) -> None:
        """Rename the class in picks and reference layers; a model's outputs (predicted
        points, heatmaps) keep the name the model knows, so its sliders, evaluation and
        export go on working."""
        for layer in self.viewer.layers:
            meta = layer_meta(layer)
            if isinstance(layer, Points) and meta.get("class") == old \
                    and meta.get("role") in (PICKS, REFERENCE):
                meta["class"] = new
                layer.name = picks_layer_name(new, meta.get("role", PICKS))
                if meta.get("role") == PICKS:
                    self.autosaver.changed(meta.get("tomogram", ""))
        self.tomogram_layout.update()  # named by tomogram again where several are open

    def _on_role_changed(self, layer: Points, old: str) -> None:
        """A picks layer became labels, a reference or predictions (the role row)."""
        meta = layer_meta(layer)
        if PICKS in (old, meta["role"]):  # labels gained or lost: the autosave follows
            self._watch(layer)
            self.autosaver.changed(str(meta["tomogram"]))
        self._update_counts()
        self._say(f"{layer.name}: {ROLE_HELP[meta['role']]}.")

    def _on_preset_chosen(self, name: str) -> None:
        if name in CLASS_PRESETS:
            self.set_preset(name)

    def _add_class(self) -> None:
        names = {c.name for c in self.state.classes}
        n = 1
        while f"class_{n}" in names:
            n += 1
        color = distinct_color(c.color for c in self.state.classes)
        self.set_classes([*self.state.classes,
                          ParticleClass(f"class_{n}", DEFAULT_RADIUS_A, 1.0, color)])

    def _remove_selected(self) -> None:
        selection = self.table.selectionModel()
        assert selection is not None  # a table always has one
        rows = {index.row() for index in selection.selectedRows()}
        self.set_classes([c for i, c in enumerate(self.state.classes) if i not in rows])

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load particle classes", "",
                                              "Classes (*.json *.yaml *.yml)")
        if path:
            self.load_classes_file(path)

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save particle classes", "classes.json",
                                              "JSON (*.json)")
        if path:
            save_classes(self.state.classes, path)
            self._say(f"Saved the classes to {path}.")

    def _on_tomogram_changed(self, name: str) -> None:
        image = self.current_image()
        self.state.tomogram = tomogram_name(image) if image is not None else ""
        self._update_counts()

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self._on_layers_changed()

    def _on_removing(self, event: Any) -> None:
        layer = self.viewer.layers[event.index]
        if is_picks(layer) and self.autosaver.dirty:
            self.save_now()

    def _on_layers_changed(self, event: Any = None) -> None:
        self._refresh_tomograms()
        self._update_counts()

    def _on_picks_changed(self, event: Any) -> None:
        if not str(getattr(event, "action", "changed")).endswith("ing"):  # not mid-drag
            self.autosaver.changed(layer_meta(event.source).get("tomogram", ""))
        self._update_counts()

    # -- helpers ----------------------------------------------------------------------
    def _watch(self, layer: Layer) -> None:
        if isinstance(layer, Image):
            align_tomogram_layers(self.viewer)  # its picks may have come first
        align_to_tomogram(self.viewer, layer)
        if isinstance(layer, Points) and layer_meta(layer).get("radius_A"):
            ensure_thick_slices(self.viewer, float(layer_meta(layer)["radius_A"]))
        if is_picks(layer):
            self.lifecycle.connect(layer.events.data, self._on_picks_changed)
        elif isinstance(layer, Image):
            self.lifecycle.connect(layer.events.name, self._on_layers_changed)

    def _refresh_tomograms(self) -> None:
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        if names == [self.tomogram_combo.itemText(i) for i in range(self.tomogram_combo.count())]:
            return
        set_combo_items(self.tomogram_combo, names)
        self._on_tomogram_changed(self.tomogram_combo.currentText())

    def _update_counts(self) -> None:
        counts = self.counts()
        self.table.blockSignals(True)
        for row, cls in enumerate(self.state.classes):
            item = self.table.item(row, COUNT)
            if item is not None:
                item.setText(str(counts.get(cls.name, 0)))
        self.table.blockSignals(False)

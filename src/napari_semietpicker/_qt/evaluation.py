"""The prediction dock's evaluation section: reference picks (layers or a file), predicted
points coloured as hits (TP) or false picks (FP), missed references (FN) as their own layer,
and a per-class table with the CZII score."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from napari.layers import Points
from napari.utils.colormaps.standardize_color import transform_color
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..classes import ParticleClass
from ..io.formats import read_picks
from ..io.picks import empty_picks
from ..layers import META, PREDICTED, REFERENCE
from ..metrics import CZII_BETA, CZII_DISTANCE_FACTOR, Evaluation, evaluate, match_picks
from ._layer_tools import find_layer, layer_meta, layer_picks, role_layers
from ._widgets import fit_table_height
from .corrections import Prediction
from .prediction_state import PredictionState, current_picks, require_prediction

MISSED = "missed"
#: Hits, false picks and missed references differ by symbol, not hue: hues are the classes'.
TP_SYMBOL, FP_SYMBOL, FN_SYMBOL = "disc", "x", "square"
FN_FALLBACK_COLOR = "#ffffff"  # an empty missed-references layer
TABLE_COLUMNS = ("class", "pred", "ref", "TP", "FP", "FN", "prec.", "recall", "F1",
                 f"F{CZII_BETA:g}")
LAYERS_NOTE = "reference: layers of role 'reference'"


class EvaluationPanel(QGroupBox):
    """Evaluate the current prediction's picks against reference picks.

    ``say(text, error)`` reports into the status line of the dock that holds the panel.
    """

    def __init__(self, viewer: napari.Viewer, state: PredictionState,
                 say: Callable[[str, bool], None]) -> None:
        super().__init__("Evaluation (CZII hit rule, 0.5 x radius)")
        self.viewer = viewer
        self.state = state
        self._say = say
        self.evaluation: Evaluation | None = None
        self._reference_file: pd.DataFrame | None = None
        layout = QVBoxLayout(self)
        ref_row = QHBoxLayout()
        self.reference_label = QLabel(LAYERS_NOTE)
        ref_file = QPushButton("File…")
        ref_file.clicked.connect(self._choose_reference)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.clicked.connect(self._on_evaluate_clicked)
        ref_row.addWidget(self.reference_label, 1)
        ref_row.addWidget(ref_file)
        ref_row.addWidget(self.evaluate_button)
        layout.addLayout(ref_row)
        self.score_label = QLabel("Evaluate to see F1, F-beta and the CZII score here.")
        self.score_label.setWordWrap(True)
        layout.addWidget(self.score_label)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        header = self.table.verticalHeader()
        assert header is not None  # a table always has one
        header.setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(110)
        layout.addWidget(self.table)

    # -- the reference -----------------------------------------------------------------------
    def _choose_reference(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference picks", "",
                                              "Picks (*.csv *.star *.json *.coords)")
        if path:
            try:
                self.set_reference_file(path)
            except (ValueError, OSError) as err:
                self._say(str(err), True)

    def set_reference_file(self, path: str | Path | None) -> None:
        """Evaluate against a picks file instead of reference layers (None: layers again)."""
        if path is None:
            self._reference_file = None
            self.reference_label.setText(LAYERS_NOTE)
            return
        self._reference_file = read_picks(path)
        self.reference_label.setText(f"reference: {Path(path).name}")

    def reference_picks(self, prediction: Prediction) -> pd.DataFrame:
        """Reference picks of the predicted tomogram: from the file, else from its layers."""
        if self._reference_file is not None:
            own = self._reference_file["experiment"] == prediction.tomogram
            return self._reference_file[own].reset_index(drop=True)
        tables = [layer_picks(layer, prediction.origin, prediction.tomogram)
                  for layer in role_layers(self.viewer, prediction.tomogram, REFERENCE)]
        return pd.concat(tables, ignore_index=True) if tables else empty_picks()

    # -- evaluating --------------------------------------------------------------------------
    def _on_evaluate_clicked(self) -> None:
        try:
            self.evaluate()
        except ValueError as err:
            self._say(str(err), True)

    def evaluate(self) -> Evaluation:
        """Score the current picks, colour them TP/FP, show missed references and a table."""
        prediction = require_prediction(self.state.current)
        reference = self.reference_picks(prediction)
        if reference.empty:
            raise ValueError(f"No reference picks for {prediction.tomogram}: open a reference "
                             "picks file or add Points layers of role 'reference'.")
        classes = prediction.card.classes
        names = {c.name for c in classes}
        ignored = sorted(set(reference["particle_type"]) - names)
        reference = reference[reference["particle_type"].isin(names)]
        predicted = current_picks(self.viewer, prediction)
        self.evaluation = evaluate(predicted, reference, classes)
        missed = [self._colour_hits(prediction, cls, predicted, reference) for cls in classes]
        self._show_missed(prediction, classes, missed)
        self._fill_table(self.evaluation)
        per_class = self.evaluation.per_class
        self.score_label.setText(
            f"<b>CZII score {self.evaluation.score:.3f}</b> · mean F1 "
            f"{per_class['f1_0.5'].mean():.3f} · "
            + " · ".join(f"{r['particle_type']} F1 {r['f1_0.5']:.2f}"
                         for r in per_class.to_dict(orient="records"))
            + "  (symbols: ● hit, ✕ false pick, ■ missed)")
        note = f" (ignored reference classes {', '.join(ignored)})" if ignored else ""
        self._say(f"CZII score {self.evaluation.score:.3f}{note}", False)
        return self.evaluation

    def refresh(self) -> None:
        """Evaluate the picks as they are now; when that is impossible (no reference for
        this tomogram), clear the table and the missed references rather than keep stale
        ones."""
        try:
            self.evaluate()
        except ValueError:
            self.clear()

    def clear(self) -> None:
        """Forget the last evaluation: an empty table, no missed references."""
        self.evaluation = None
        self.table.setRowCount(0)
        self.score_label.setText("No evaluation: no reference picks for this tomogram.")
        for layer in list(self.viewer.layers):
            if layer_meta(layer).get("role") == MISSED:
                layer.data = np.zeros((0, 3))

    def _colour_hits(self, prediction: Prediction, cls: ParticleClass, predicted: pd.DataFrame,
                     reference: pd.DataFrame) -> pd.DataFrame:
        """Colour one class's predicted points TP/FP; return its missed references."""
        pred = predicted[predicted["particle_type"] == cls.name]
        ref = reference[reference["particle_type"] == cls.name]
        pred_hit, ref_hit = match_picks(pred[["z", "y", "x"]].to_numpy(float),
                                        ref[["z", "y", "x"]].to_numpy(float),
                                        CZII_DISTANCE_FACTOR * cls.radius_A)
        layer = find_layer(self.viewer, Points, prediction.tomogram, PREDICTED, cls.name)
        if layer is not None and len(layer.data):
            with self.state.own_changes():
                layer.symbol = np.where(pred_hit, TP_SYMBOL, FP_SYMBOL)
        return ref[~ref_hit]

    def _show_missed(self, prediction: Prediction, classes: list[ParticleClass],
                     missed: list[pd.DataFrame]) -> None:
        table = pd.concat(missed, ignore_index=True)
        radius = {c.name: c.radius_A for c in classes}
        voxel = prediction.voxel_size  # the layer shares the tomogram's scale
        data = table[["z", "y", "x"]].to_numpy(float).reshape(-1, 3) / voxel
        sizes = 2 * table["particle_type"].map(radius).to_numpy(float) / voxel
        colour = {c.name: c.color for c in classes}
        colours = transform_color(list(table["particle_type"].map(colour))) if len(table) \
            else FN_FALLBACK_COLOR
        features = pd.DataFrame({"particle_type": table["particle_type"].to_numpy(str)})
        layer = find_layer(self.viewer, Points, prediction.tomogram, MISSED, None)
        if layer is None:
            layer = self.viewer.add_points(
                data, name=f"missed references {prediction.tomogram}",
                size=sizes if len(data) else 10.0,
                face_color="transparent", border_color=colours, border_width=0.12,
                symbol=FN_SYMBOL,
                features=features, translate=tuple(prediction.origin), scale=(voxel,) * 3,
                units="angstrom",
                projection_mode="rescale_spherical",  # as the picks layers
                metadata={META: {"tomogram": prediction.tomogram, "role": MISSED}})
        else:
            layer.data = data
            layer.features = features
            if len(data):
                layer.size = sizes
                layer.border_color = colours
                layer.symbol = FN_SYMBOL

    def _fill_table(self, evaluation: Evaluation) -> None:
        rows = evaluation.per_class.to_dict(orient="records")
        self.table.setRowCount(len(rows) + 1)
        for r, values in enumerate(rows):
            cells = [values["particle_type"], values["n_pred"], values["n_ref"],
                     values["tp_0.5"], values["fp_0.5"], values["fn_0.5"],
                     values["precision_0.5"], values["recall_0.5"], values["f1_0.5"],
                     values["fbeta"]]
            for c, value in enumerate(cells):
                text = f"{value:.3f}" if isinstance(value, float) else str(value)
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.setItem(len(rows), 0, QTableWidgetItem("CZII score"))
        self.table.setItem(len(rows), len(TABLE_COLUMNS) - 1,
                           QTableWidgetItem(f"{evaluation.score:.3f}"))
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        fit_table_height(self.table)

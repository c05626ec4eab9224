"""Close the napari window while the Training dock trains, as a user would (napari.run()).

Usage: python close_napari_while_training.py MODEL_DIR TESTS_DIR

Prints ``exited cleanly; model saved: <bool>; steps seen: <n>`` after the event loop ends;
a crash (the worker reporting into destroyed widgets) ends the process without it.
"""

import sys
from pathlib import Path

import napari
from napari.layers import Layer
from qtpy.QtCore import QTimer

model_dir, tests_dir = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(tests_dir))
from conftest import BLOB_CLASSES, blob_tomogram  # noqa: E402

from napari_semietpicker._qt.training import TrainingWidget  # noqa: E402
from napari_semietpicker.layers import image_layer, picks_layers  # noqa: E402

viewer = napari.Viewer(show=True)
for i in range(2):
    tomogram, picks = blob_tomogram(f"blob_{i}", seed=i)
    for item in [image_layer(tomogram), *picks_layers(picks, BLOB_CLASSES, tomogram.name)]:
        viewer.add_layer(Layer.create(*item))
dock = TrainingWidget(viewer)
viewer.window.add_dock_widget(dock, name="Training")
dock.preset_combo.setCurrentText("tiny")
dock.burnin_spin.setValue(100_000)
dock.crop_spin.setValue(32)
dock.device_combo.setCurrentText("cpu")
dock.folder_edit.setText(str(model_dir))
steps = []


def close_after_three(report: object) -> None:
    steps.append(report)
    if len(steps) == 3:
        QTimer.singleShot(0, viewer.window.close)  # what File > Close Window does


dock.progressed.connect(close_after_three)
assert dock.start(), dock.status.text()
napari.run()
print(f"exited cleanly; model saved: {(model_dir / 'config.json').is_file()}; "
      f"steps seen: {len(steps)}", flush=True)

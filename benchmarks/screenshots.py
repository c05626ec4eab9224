"""Screenshots of the demo layout (sample data, the three docks) at laptop and desktop sizes.

Run under a display (``xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/screenshots.py``):
writes ``docs/images/layout-<w>x<h>-<dock>.png`` for each dock tab and prints, for each
size, each dock's content height against the height it is given (content taller than its
dock scrolls inside it). At 1366x768 it also writes the README's dock images
(``annotation_dock.png``, ``training_dock.png`` with the ETA of the CPU defaults,
``prediction_dock.png``), the sample in 3D (``sample_data.png``) and the orthogonal views
(``ortho_views.png``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_semietpicker._qt.launch import DOCKS, populate_viewer

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIZES = ((1366, 768), (1920, 1080))
LAPTOP = SIZES[0]
#: The README's image of each dock, taken at the laptop size.
README_IMAGES = dict(zip(DOCKS, ("annotation_dock.png", "training_dock.png",
                                 "prediction_dock.png")))


def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


def save(viewer: napari.Viewer, name: str) -> None:
    shot = viewer.screenshot(canvas_only=False, flash=False)
    napari.utils.io.imsave(str(OUT / name), shot)


def wait_for_eta(training, timeout_s: float = 120.0) -> None:
    """Let the training dock time a step, so that its ETA shows (it runs in a worker)."""
    end = time.monotonic() + timeout_s
    while not training.eta_label.text().startswith("ETA") and time.monotonic() < end:
        settle(5)
        time.sleep(0.1)
    print(f"training dock: {training.eta_label.text()}", flush=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    widgets = populate_viewer(viewer)
    docks = [w.parentWidget() for w in widgets]
    while not all(hasattr(d, "raise_") and d.metaObject().className().endswith("DockWidget")
                  for d in docks):
        docks = [d if d.metaObject().className().endswith("DockWidget") else d.parentWidget()
                 for d in docks]
    for width, height in SIZES:
        viewer.window.resize(width, height)
        settle()
        for name, widget, dock in zip(DOCKS, widgets, docks):
            dock.raise_()
            settle()
            scroll = widget.findChild(QScrollArea)
            content = scroll.widget().sizeHint().height()
            print(f"{width}x{height} {name}: dock {dock.height()} px, content {content} px, "
                  f"window {viewer.window.geometry()[2:]}", flush=True)
            tag = name.split()[0].lower().strip(",")
            if name == "Training":
                wait_for_eta(widget)
            save(viewer, f"layout-{width}x{height}-{tag}.png")
            if (width, height) == LAPTOP:
                save(viewer, README_IMAGES[name])
    viewer.window.resize(*LAPTOP)
    docks[0].raise_()
    viewer.dims.ndisplay = 3  # picks as shaded spheres
    viewer.scene.camera.angles = (0.0, -30.0, 60.0)
    settle()
    save(viewer, "sample_data.png")
    viewer.dims.ndisplay = 2
    widgets[0].ortho_toggle.setChecked(True)
    viewer.window.resize(*LAPTOP)
    viewer.dims.current_step = (32, 80, 80)
    settle()
    print(f"orthogonal views: window {viewer.window.geometry()[2:]}", flush=True)
    save(viewer, "ortho_views.png")
    widgets[0].ortho_toggle.setChecked(False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

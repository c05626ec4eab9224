"""Screenshots of the demo layout (sample data, the three docks) at laptop and desktop sizes.

Run under a display (``xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/screenshots.py``):
writes ``docs/images/layout-<w>x<h>-<dock>.png`` for each dock tab and prints, for each
size, each dock's content height against the height it is given (content taller than its
dock scrolls inside it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_semietpicker._qt.launch import DOCKS, populate_viewer

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIZES = ((1366, 768), (1920, 1080))


def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


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
            shot = viewer.screenshot(canvas_only=False, flash=False)
            napari.utils.io.imsave(str(OUT / f"layout-{width}x{height}-{tag}.png"), shot)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

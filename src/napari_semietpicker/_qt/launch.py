"""Open napari with the sample tomogram and the plugin's docks (``semietpicker demo``)."""

from __future__ import annotations

import napari

DOCKS = ("Classes and annotation", "Training", "Prediction, QC and export")


def open_napari() -> int:
    """Show the viewer and run the Qt event loop until the window closes."""
    populate_viewer(napari.Viewer(title="SemiETPicker demo"))
    napari.run()
    return 0


def populate_viewer(viewer: napari.Viewer) -> list:
    """Load the sample tomogram with its reference picks and add the plugin's docks."""
    viewer.open_sample("napari-semietpicker", "simulated")
    return [viewer.window.add_plugin_dock_widget("napari-semietpicker", name)[1]
            for name in DOCKS]

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
    """Load the sample tomogram with its reference picks and add the plugin's docks as tabs
    of one dock area (stacked, they need about twice a laptop screen's height); the
    annotation dock is the tab shown first."""
    viewer.open_sample("napari-semietpicker", "simulated")
    added = [viewer.window.add_plugin_dock_widget("napari-semietpicker", name, tabify=True)
             for name in DOCKS]
    added[0][0].raise_()
    return [widget for _, widget in added]

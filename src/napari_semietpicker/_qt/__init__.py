"""Dock widgets: the only package that imports Qt and napari (thin layers over the core)."""

"""SemiETPicker: semi-supervised particle picking in cryo-ET tomograms.

The core (everything outside ``_qt`` and the napari contribution modules) imports
neither Qt nor napari, so it runs from the ``semietpicker`` CLI and on clusters.
"""

__version__ = "0.1.0"

"""Reading and writing tomograms and picks; no Qt, no napari."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(module: str, purpose: str) -> ModuleType:
    """Import a library of the ``interop`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the {module} library: pip install napari-semietpicker[interop]"
        ) from err

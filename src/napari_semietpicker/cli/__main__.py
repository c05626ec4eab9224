"""``python -m napari_semietpicker.cli`` runs the ``semietpicker`` command (as torchrun does)."""

import sys

from . import main

sys.exit(main())

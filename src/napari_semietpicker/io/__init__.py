"""Reading and writing tomograms and picks; no Qt, no napari."""

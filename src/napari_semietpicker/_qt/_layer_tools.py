"""Finding the viewer's layers by role and converting them to core objects (shared by the docks).

Layers we make carry a metadata block (``layer.metadata["semietpicker"]``) with the
tomogram they belong to, their role (picks, predicted, reference, heatmap, ...), their
particle class and its radius, weight and colour; these helpers read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Layer, Points
from napari.utils.colormaps import Colormap
from napari.utils.colormaps.standardize_color import transform_color

from ..classes import ParticleClass
from ..geometry import Grid, same_voxel_size
from ..io.tomogram import Tomogram
from ..layers import (
    META,
    PICKS,
    PREDICTED,
    heatmap_colormap,
    heatmap_controls,
    picks_from_layer,
    picks_layer_name,
    points_layer,
)
from ..model.checkpoint import ModelCard

HEATMAP = "heatmap"  # the role of a predicted heatmap (an Image layer per class)

# -- reading our metadata ---------------------------------------------------------------------


def layer_meta(layer: object) -> dict:
    """Our metadata block of a layer ({} for layers we did not make)."""
    meta = getattr(layer, "metadata", None) or {}
    block = meta.get(META, {})
    return block if isinstance(block, dict) else {}


def tomogram_name(image: Image) -> str:
    """The tomogram name picks refer to: the one in the metadata, else the layer name."""
    return str(layer_meta(image).get("tomogram") or image.name)


def is_picks(layer: object) -> bool:
    """A Points layer of user picks (not predictions or references) with a class."""
    meta = layer_meta(layer)
    return isinstance(layer, Points) and meta.get("role") == PICKS and "class" in meta


# -- finding layers ---------------------------------------------------------------------------


def tomogram_images(viewer: napari.Viewer) -> list[Image]:
    """3D Image layers that are tomograms (not heatmaps or other derived images)."""
    return [layer for layer in viewer.layers
            if isinstance(layer, Image) and layer.ndim == 3 and "role" not in layer_meta(layer)]


def has_role(layer: object, tomogram: str, role: str) -> bool:
    """Whether a layer is one of ours for this tomogram and role. Predictions opened from a
    file (``file`` in the metadata) are not the prediction dock's: it neither overwrites,
    exports nor evaluates them as its model's."""
    meta = layer_meta(layer)
    return meta.get("tomogram") == tomogram and meta.get("role") == role \
        and not (role == PREDICTED and "file" in meta)


def role_layers(viewer: napari.Viewer, tomogram: str, role: str) -> list[Points]:
    """Points layers of one tomogram and role (picks, predicted, reference), in layer order."""
    return [layer for layer in viewer.layers if isinstance(layer, Points)
            and has_role(layer, tomogram, role) and "class" in layer_meta(layer)]


def tomogram_image(viewer: napari.Viewer, tomogram: str) -> Image | None:
    """The Image layer of a tomogram (by its tomogram name), if it is open."""
    return next((image for image in tomogram_images(viewer)
                 if tomogram_name(image) == tomogram), None)


def find_layer(viewer: napari.Viewer, kind: type, tomogram: str, role: str,
               class_name: str | None) -> Layer | None:
    """The first layer of this type, tomogram, role and class (None: a layer with no class)."""
    return next((layer for layer in viewer.layers if isinstance(layer, kind)
                 and has_role(layer, tomogram, role)
                 and layer_meta(layer).get("class") == class_name), None)


# -- images <-> tomograms -----------------------------------------------------------------------


def image_voxel_size(image: Image) -> float:
    """Voxel size in Angstrom: the image's scale (isotropic), as the reader sets it."""
    scale = np.asarray(image.scale[-3:], dtype=float)
    if not same_voxel_size(scale.min(), scale.max()):
        raise ValueError(f"{image.name}: voxels must be cubic, the layer scale is "
                         f"{tuple(scale)}")
    return float(scale[0])


def image_tomogram(image: Image) -> Tomogram:
    """A Tomogram view of an Image layer (level 0 of a pyramid; data not copied)."""
    data = image.data[0] if image.multiscale else image.data
    return Tomogram(data, image_voxel_size(image), tomogram_name(image))


def layer_origin(image: Image) -> np.ndarray:
    """World position (Angstrom) of voxel (0, 0, 0): picks are relative to it."""
    return np.asarray(image.translate[-3:], dtype=float)


# -- picks layers <-> picks tables and classes --------------------------------------------------


def world_points(layer: Points) -> np.ndarray:
    """A Points layer's positions in world coordinates (Angstrom), one row per point."""
    return np.asarray(layer.data, dtype=float).reshape(-1, 3) * np.asarray(layer.scale[-3:]) \
        + np.asarray(layer.translate[-3:])


def to_layer_data(layer: Points, world: np.ndarray) -> np.ndarray:
    """World positions (Angstrom) as data coordinates of ``layer``."""
    return (np.asarray(world, dtype=float).reshape(-1, 3) - np.asarray(layer.translate[-3:])) \
        / np.asarray(layer.scale[-3:])


def layer_picks(layer: Points, origin: np.ndarray, experiment: str) -> pd.DataFrame:
    """A Points layer's points as a picks table in Angstrom from the tomogram corner."""
    return picks_from_layer(world_points(layer) - np.asarray(origin, dtype=float),
                            layer.metadata, layer.features, experiment)


def align_to_tomogram(viewer: napari.Viewer, layer: Layer) -> None:
    """Give one of our Points layers its tomogram's scale and translate, each point kept
    where it is in the tomogram (``data * scale`` Angstrom from the corner).

    All layers of a tomogram share its frame, so that napari's sliders step one voxel
    (a picks file opened without its tomogram beside it comes in Angstrom, at scale 1),
    and the picks follow a tomogram that is moved (placed beside another one).
    """
    if not isinstance(layer, Points) or "tomogram" not in layer_meta(layer):
        return
    image = tomogram_image(viewer, str(layer_meta(layer)["tomogram"]))
    if image is None:
        return
    scale, translate = np.asarray(image.scale[-3:]), np.asarray(image.translate[-3:])
    old_scale = np.asarray(layer.scale[-3:])
    if np.allclose(old_scale, scale) and np.allclose(layer.translate[-3:], translate):
        return
    in_tomogram = np.asarray(layer.data, dtype=float).reshape(-1, 3) * old_scale
    factor = old_scale[-1] / scale[-1]
    sizes, current = layer.size * factor, layer.current_size * factor
    layer.scale, layer.translate = tuple(scale), tuple(translate)
    layer.data = in_tomogram / scale
    layer.size, layer.current_size = sizes, current


def align_tomogram_layers(viewer: napari.Viewer) -> None:
    """:func:`align_to_tomogram` for every layer (cheap when they are aligned already)."""
    for layer in list(viewer.layers):
        align_to_tomogram(viewer, layer)


def class_of_layer(layer: Points) -> ParticleClass:
    """The particle class a picks layer stands for (name, radius, weight, colour in its
    metadata); a layer without a weight (made before layers carried it) scores with 1."""
    meta = layer_meta(layer)
    if "radius_A" not in meta:
        raise ValueError(f"layer {layer.name!r} has no particle radius in its metadata; make "
                         "picks layers with the annotation dock or open a picks file")
    return ParticleClass(str(meta["class"]), float(meta["radius_A"]),
                         float(meta.get("weight", 1.0)), str(meta.get("color", "#ffffff")))


def classes_of_layers(layers: Iterable[Points]) -> list[ParticleClass]:
    """Classes of picks layers, first seen first; one name with two radii is refused."""
    found: dict[str, ParticleClass] = {}
    for layer in layers:
        cls = class_of_layer(layer)
        known = found.setdefault(cls.name, cls)
        if not math.isclose(known.radius_A, cls.radius_A, rel_tol=1e-3):
            raise ValueError(f"class {cls.name!r} has two radii in the picks layers "
                             f"({known.radius_A:g} and {cls.radius_A:g} A): make them agree")
    return list(found.values())


# -- making picks layers -------------------------------------------------------------------------


def ensure_thick_slices(viewer: napari.Viewer, radius_A: float) -> None:
    """Make slices at least a particle radius thick on each side, so that a particle shows
    in every slice through it (napari >= 0.9 draws points within the slice thickness only)."""
    dims = viewer.dims
    left = tuple(max(m, radius_A) for m in dims.margin_left)
    right = tuple(max(m, radius_A) for m in dims.margin_right)
    if (left, right) != (tuple(dims.margin_left), tuple(dims.margin_right)):
        dims.margin_left, dims.margin_right = left, right


def add_points_layer(viewer: napari.Viewer, table: pd.DataFrame, cls: ParticleClass,
                     tomogram: str, role: str, origin: np.ndarray | None = None,
                     **meta: object) -> Points:
    """Add one class's Points layer (made by :func:`..layers.points_layer`) to the viewer.

    The layer takes the scale and translate of the tomogram's Image layer (else
    ``origin``, the tomogram's world position, at scale 1); ``meta`` is added to its
    metadata block. Slices are made thick enough to show the particles.
    """
    image = tomogram_image(viewer, tomogram)
    voxel_size = image_voxel_size(image) if image is not None else 1.0
    data, attrs, _ = points_layer(table, cls, tomogram, role, voxel_size)
    attrs["metadata"][META].update(meta)
    if image is not None:
        attrs["translate"] = tuple(layer_origin(image))
    elif origin is not None:
        attrs["translate"] = tuple(origin)
    ensure_thick_slices(viewer, cls.radius_A)
    return viewer.add_layer(Layer.create(data, attrs, "points"))


def show_heatmap(viewer: napari.Viewer, card: ModelCard, index: int, tomogram: str,
                 origin: np.ndarray, heat: np.ndarray, grid: Grid) -> None:
    """Show one class's predicted heatmap (``card.classes[index]``) as an Image layer in the
    class colour (:func:`..layers.heatmap_colormap`: overlaps do not sum to white), added or
    updated in place, where it lies: on ``grid``, the model's output
    grid in the tomogram's frame (``PeakCache.heatmap_grid``), placed from ``origin``."""
    cls = card.classes[index]
    scale = (grid.voxel_size,) * 3
    translate = tuple(np.asarray(origin, dtype=float) + np.asarray(grid.offset_A))
    layer = find_layer(viewer, Image, tomogram, HEATMAP, cls.name)
    if layer is not None:
        layer.data, layer.scale, layer.translate = heat, scale, translate
        return
    rgb = transform_color(cls.color)[0][:3]
    viewer.add_image(
        heat, name=picks_layer_name(cls.name, HEATMAP), blending="translucent",
        colormap=Colormap(heatmap_colormap(rgb), controls=heatmap_controls(),
                          name=f"semietpicker {cls.name}"),
        contrast_limits=(0.0, 1.0), scale=scale, translate=translate, units="angstrom",
        metadata={META: {"class": cls.name, "tomogram": tomogram, "role": HEATMAP}})

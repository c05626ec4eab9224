"""napari writer: Points layers to a picks file (CZII CSV, RELION 5 STAR or .coords).

Each layer's class and tomogram come from ``metadata["semietpicker"]``; a layer without them
(drawn by hand in a plain Points layer) is taken as the class named like the layer, in the
one tomogram the other layers name (else the output file's stem). The previous file is kept
as a numbered backup (``<name>.bak``, ``.bak2``, ...). STAR and .coords need the tomogram's
voxel size (and shape, for STAR), which layers made by this plugin carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io.formats import write_picks
from .io.picks import empty_picks
from .layers import META, picks_from_layer

LayerDataTuple = tuple[Any, dict, str]
SUFFIXES = (".csv", ".star", ".coords", ".json")


def write_points(path: str, layer_data: Sequence[LayerDataTuple]) -> list[str]:
    """Write the picks of all given Points layers to ``path``; return the files written.

    A .coords file holds one class and a copick picks .json one run and one class: with
    several, one ``<stem>_<class>.coords`` (``<stem>_<run>_<class>.json``) is written each.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{out}: save picks as {', '.join(SUFFIXES)}")
    points = [(data, attrs) for data, attrs, kind in layer_data if kind == "points"]
    df = layers_to_picks(points, default_tomogram=out.stem)
    voxel_size, shapes = _tomogram_info([attrs for _, attrs in points], out)
    if suffix == ".csv":
        write_picks(df, out, keep_previous=True)
        return [str(out)]
    if suffix == ".json":  # copick: one run and one class per file
        return write_per_group(df, out, ["experiment", "particle_type"])
    if voxel_size is None:
        raise ValueError(
            f"{out}: {suffix} files need the tomogram's voxel size, which these layers do not "
            "carry (make them with the classes dock or open them beside their tomogram); "
            "save as .csv (Angstrom) instead"
        )
    if suffix == ".star":
        write_picks(df, out, voxel_size=voxel_size, shape_by_experiment=shapes or None,
                    keep_previous=True)
        return [str(out)]
    return write_per_group(df, out, ["particle_type"], voxel_size=voxel_size)


def write_per_group(df: pd.DataFrame, out: Path, keys: list[str], **options) -> list[str]:
    """Formats of one class per file: ``out`` itself, or ``<stem>_<group>`` per group
    (``options`` go to :func:`~napari_semietpicker.io.formats.write_picks`)."""
    groups = list(df.groupby(keys, sort=True))
    if len(groups) <= 1:
        write_picks(df, out, keep_previous=True, **options)
        return [str(out)]
    written = []
    for values, rows in groups:
        label = "_".join(str(v) for v in values)
        target = out.with_name(f"{out.stem}_{label}{out.suffix}")
        write_picks(rows, target, keep_previous=True, **options)
        written.append(str(target))
    return written


def layers_to_picks(points: Sequence[tuple[Any, dict]], default_tomogram: str) -> pd.DataFrame:
    """One picks table from (data, attributes) of Points layers (see the module notes)."""
    metas = [attrs.get("metadata", {}).get(META, {}) for _, attrs in points]
    named = {m["tomogram"] for m in metas if m.get("tomogram")}
    fallback = named.pop() if len(named) == 1 else default_tomogram
    return concat_picks([layer_data_picks(data, attrs, fallback) for data, attrs in points])


def concat_picks(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Join picks tables; rows without a score (a table had none) get score 1.0."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_picks()
    df = pd.concat(tables, ignore_index=True)
    if "score" in df:
        df["score"] = df["score"].fillna(1.0)
    return df


def layer_data_picks(data: Any, attrs: dict, default_tomogram: str) -> pd.DataFrame:
    """The picks table of one Points layer given its data and attributes (``metadata``,
    ``name``, ``features``, ``scale``: positions are ``data * scale`` Angstrom from the
    tomogram corner). Points added by hand have no score (NaN): they get 1.0."""
    meta = {"tomogram": default_tomogram, "class": attrs.get("name") or "particle",
            **attrs.get("metadata", {}).get(META, {})}
    features = attrs.get("features")
    if isinstance(features, pd.DataFrame) and "score" in features:
        features = features.fillna({"score": 1.0})
    return picks_from_layer(data, {META: meta}, features, scale=attrs.get("scale", 1.0))


def _tomogram_info(attrs_list: Sequence[dict], out: Path
                   ) -> tuple[float | None, dict[str, tuple[int, int, int]]]:
    """The one voxel size the layers carry (or None) and each tomogram's shape."""
    metas = [a.get("metadata", {}).get(META, {}) for a in attrs_list]
    sizes = {float(m["voxel_size"]) for m in metas if m.get("voxel_size")}
    if len(sizes) > 1:
        raise ValueError(f"{out}: the layers come from tomograms of different voxel sizes "
                         f"{sorted(sizes)}; save them separately")
    shapes = {m["tomogram"]: tuple(int(s) for s in m["shape"])
              for m in metas if m.get("shape") and m.get("tomogram")}
    return (sizes.pop() if sizes else None), shapes  # type: ignore[return-value]

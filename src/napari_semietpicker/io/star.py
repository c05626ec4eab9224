"""RELION 4/5 STAR picks (through ``starfile``) and plain ``.coords`` files.

Conventions (docs/design.md, coordinates; the same as copick's RELION import and export):

* RELION 4: ``rlnCoordinateX/Y/Z`` in pixels of the coordinates' grid, voxel ``i`` at
  ``i * pixel_size`` Angstrom. RELION 4 itself means unbinned tilt-series pixels; pass the
  pixel size the coordinates are in (e.g. the binned tomogram's voxel size for bin-4 picks).
* RELION 5: ``rlnCenteredCoordinateX/Y/ZAngst`` in Angstrom from the tomogram centre, the
  centre being ``shape * voxel_size / 2`` per axis (x, y, z), so the shape and voxel size of
  the tomogram the picks belong to are needed (a binned level gives the same centre).
* ``.coords``: whitespace-separated ``x y z`` in voxels, one tomogram and one class per file.
* The tomogram name is ``rlnTomoName``; the particle class is kept in the extra column
  ``semietpickerParticleType`` (RELION keeps labels it does not know and passes them on),
  and the score in ``rlnAutopickFigureOfMerit``. A STAR without the class column takes
  the class from the ``particle_type`` argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .picks import empty_picks, validate_picks

TOMO_NAME = "rlnTomoName"
CLASS_COLUMN = "semietpickerParticleType"
SCORE_COLUMN = "rlnAutopickFigureOfMerit"
PIXEL_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
CENTERED_COLUMNS = (
    "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst",
)
STAR_VERSIONS = ("relion4", "relion5")
#: The block of a RELION 5 picks file written here that holds each tomogram's size and pixel
#: size (RELION 5's tomograms.star labels), so that the file reopens on its own.
TOMOGRAMS_BLOCK = "tomograms"
SIZE_COLUMNS = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
PIXEL_SIZE_COLUMN = "rlnTomoTiltSeriesPixelSize"

Shape = tuple[int, int, int]
#: A (z, y, x) shape for every tomogram, or one per tomogram name.
ShapeSpec = Shape | Mapping[str, Shape]
#: A voxel size (A) for every tomogram, or one per tomogram name.
VoxelSizeSpec = float | Mapping[str, float]


def _starfile() -> Any:
    try:
        import starfile
    except ImportError as err:
        raise ImportError(
            "STAR files need starfile: pip install napari-semietpicker[interop]"
        ) from err
    return starfile


def read_star_table(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles block of a STAR file (the one with coordinates) and its optics block."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such STAR file")
    try:
        blocks = _starfile().read(path, always_dict=True, parse_as_string=[TOMO_NAME, CLASS_COLUMN])
    except Exception as err:  # starfile raises assorted parser errors
        raise ValueError(f"{path}: not a readable STAR file ({err})") from err
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    particles = next(
        (t for t in tables.values()
         if set(PIXEL_COLUMNS) <= set(t.columns) or set(CENTERED_COLUMNS) <= set(t.columns)),
        None,
    )
    if particles is None:
        raise ValueError(
            f"{path}: no block with RELION 4 ({', '.join(PIXEL_COLUMNS)}) or RELION 5 "
            f"({', '.join(CENTERED_COLUMNS)}) coordinates"
        )
    return particles, tables.get("optics")


def star_tomograms(path: str | Path) -> tuple[dict[str, Shape], dict[str, float]]:
    """Each tomogram's (z, y, x) shape and voxel size from the file's ``tomograms`` block
    (written by :func:`write_star` for RELION 5), or empty dicts when it has none."""
    path = Path(path)
    try:
        blocks = _starfile().read(path, always_dict=True, parse_as_string=[TOMO_NAME])
    except Exception as err:  # starfile raises assorted parser errors
        raise ValueError(f"{path}: not a readable STAR file ({err})") from err
    block = blocks.get(TOMOGRAMS_BLOCK)
    needed = {TOMO_NAME, *SIZE_COLUMNS, PIXEL_SIZE_COLUMN}
    if not isinstance(block, pd.DataFrame) or not needed <= set(block.columns):
        return {}, {}
    sizes = _numbers(block, (*SIZE_COLUMNS, PIXEL_SIZE_COLUMN), path)
    if np.any(sizes <= 0):
        raise ValueError(f"{path}: the {TOMOGRAMS_BLOCK} block has a size that is not positive")
    names = block[TOMO_NAME].astype(str)
    shapes: dict[str, Shape] = {n: (int(round(z)), int(round(y)), int(round(x)))
                                for n, (x, y, z) in zip(names, sizes[:, :3])}
    return shapes, {n: float(row[3]) for n, row in zip(names, sizes)}


def star_version(path: str | Path) -> Literal["relion4", "relion5"]:
    """``"relion5"`` if the file has centred Angstrom coordinates, else ``"relion4"``."""
    particles, _ = read_star_table(path)
    return "relion5" if set(CENTERED_COLUMNS) <= set(particles.columns) else "relion4"


def read_star(path: str | Path, *, voxel_size: VoxelSizeSpec | None = None,
              shape: ShapeSpec | None = None,
              particle_type: str | None = None, tomogram_name: str | None = None) -> pd.DataFrame:
    """Read RELION 4 or 5 picks into a picks table (Angstrom from the corner).

    RELION 5 centred coordinates need ``shape`` and ``voxel_size`` (see the module notes),
    taken from the file's ``tomograms`` block when not given (:func:`star_tomograms`);
    without a shape, a file that also has pixel coordinates is read as RELION 4. RELION 4
    needs the coordinates' pixel size: ``voxel_size``, else the optics block's
    ``rlnTomoTiltSeriesPixelSize``. Rows without ``rlnTomoName`` get ``tomogram_name``
    (default: the file stem); rows without a class column get ``particle_type``.
    """
    path = Path(path)
    particles, optics = read_star_table(path)
    n = len(particles)
    if TOMO_NAME in particles:
        names = particles[TOMO_NAME].astype(str).to_numpy()
    else:
        names = np.full(n, tomogram_name or path.stem, dtype=object)
    if CLASS_COLUMN in particles:
        classes = particles[CLASS_COLUMN].astype(str).to_numpy()
    elif particle_type is not None:
        classes = np.full(n, particle_type, dtype=object)
    else:
        raise ValueError(
            f"{path}: no particle class column ({CLASS_COLUMN}); give the class of these "
            "picks (particle_type, --particle-type)"
        )
    centered = set(CENTERED_COLUMNS) <= set(particles.columns)
    pixels = set(PIXEL_COLUMNS) <= set(particles.columns)
    if centered and (shape is None or voxel_size is None):
        own_shapes, own_sizes = star_tomograms(path)
        if own_shapes and set(names) <= set(own_shapes):  # the file knows its tomograms
            shape = own_shapes if shape is None else shape
            voxel_size = own_sizes if voxel_size is None else voxel_size
    if centered and (shape is not None or not pixels):
        if shape is None or voxel_size is None:
            raise ValueError(
                f"{path}: RELION 5 centred coordinates need the tomogram's shape and voxel size "
                "(give the tomogram, or shape and voxel_size)"
            )
        xyz = _numbers(particles, CENTERED_COLUMNS, path)
        xyz = xyz + np.array([_center_xyz(shape, name, voxel_size, path) for name in names],
                             dtype=float).reshape(-1, 3)
    else:
        pixel_size = voxel_size if voxel_size is not None else _optics_pixel_size(optics)
        if pixel_size is None:
            raise ValueError(
                f"{path}: RELION 4 pixel coordinates need the pixel size they are in "
                "(voxel_size, --voxel-size)"
            )
        xyz = _numbers(particles, PIXEL_COLUMNS, path) * _sizes(pixel_size, names, path)
    df = pd.DataFrame({"experiment": names, "particle_type": classes,
                       "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    if SCORE_COLUMN in particles:
        df["score"] = _numbers(particles, (SCORE_COLUMN,), path)[:, 0]
    return validate_picks(df, source=str(path))


def write_star(df: pd.DataFrame, path: str | Path, *,
               version: Literal["relion4", "relion5"] = "relion5",
               voxel_size: VoxelSizeSpec | None = None,
               shape: ShapeSpec | None = None, keep_previous: bool = False) -> None:
    """Write picks as a RELION 4 or 5 particles STAR file, atomically.

    RELION 4 writes pixel coordinates at ``voxel_size``; RELION 5 writes centred Angstrom
    and needs ``shape`` and ``voxel_size`` (each one for all tomograms or one per name),
    which it also writes in a ``tomograms`` block, so that the file reopens on its own.
    """
    path = Path(path)
    df = validate_picks(df, source=str(path))
    if version not in STAR_VERSIONS:
        raise ValueError(f"{path}: unknown STAR version {version!r}; expected {STAR_VERSIONS}")
    xyz = df[["x", "y", "z"]].to_numpy(dtype=float).reshape(-1, 3)
    out = pd.DataFrame({TOMO_NAME: df["experiment"].to_numpy(dtype=object)})
    if version == "relion5":
        if shape is None or voxel_size is None:
            raise ValueError(
                f"{path}: RELION 5 needs the shape and voxel size of each tomogram to centre "
                "coordinates (give the tomogram, or shape and voxel_size)"
            )
        centres = np.array([_center_xyz(shape, name, voxel_size, path)
                            for name in df["experiment"]], dtype=float).reshape(-1, 3)
        columns, values = CENTERED_COLUMNS, xyz - centres
    else:
        if voxel_size is None:
            raise ValueError(
                f"{path}: RELION 4 needs the pixel size of the coordinates "
                "(voxel_size, --voxel-size)"
            )
        columns, values = PIXEL_COLUMNS, xyz / _sizes(voxel_size, df["experiment"], path)
    for i, column in enumerate(columns):
        out[column] = values[:, i]
    out[CLASS_COLUMN] = df["particle_type"].to_numpy(dtype=object)
    if "score" in df:
        out[SCORE_COLUMN] = df["score"].to_numpy(dtype=float)
    blocks = {"particles": out}
    if version == "relion5":
        assert shape is not None and voxel_size is not None  # checked above
        blocks[TOMOGRAMS_BLOCK] = _tomograms_block(
            [str(n) for n in pd.unique(df["experiment"])], shape, voxel_size, path)
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        _starfile().write(blocks, tmp, float_format="%.6f")


def _tomograms_block(names: Sequence[str], shape: ShapeSpec, voxel_size: VoxelSizeSpec,
                     path: Path) -> pd.DataFrame:
    """RELION 5 tomogram sizes (x, y, z voxels) and pixel sizes, one row per tomogram."""
    rows = []
    for name in names:
        z, y, x = _per_tomogram(shape, name, "shape", path)
        rows.append({TOMO_NAME: str(name), SIZE_COLUMNS[0]: int(x), SIZE_COLUMNS[1]: int(y),
                     SIZE_COLUMNS[2]: int(z),
                     PIXEL_SIZE_COLUMN: float(_per_tomogram(voxel_size, name, "voxel size",
                                                            path))})
    return pd.DataFrame(rows, columns=[TOMO_NAME, *SIZE_COLUMNS, PIXEL_SIZE_COLUMN])


def read_coords(path: str | Path, *, voxel_size: VoxelSizeSpec | None, particle_type: str | None,
                tomogram_name: str | None = None) -> pd.DataFrame:
    """Read a ``.coords`` file (``x y z`` in voxels) as picks of one class and tomogram.

    The voxel size and class are not in the file and must be given; the tomogram name
    defaults to the file stem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .coords file")
    given = (("voxel_size", voxel_size), ("particle_type", particle_type))
    missing = [name for name, value in given if value is None]
    if missing:
        raise ValueError(
            f"{path}: a .coords file holds x y z in voxels only; give {', '.join(missing)}"
        )
    try:
        values = np.loadtxt(path, dtype=float, ndmin=2, comments="#")
    except ValueError as err:
        raise ValueError(f"{path}: not a readable .coords file ({err})") from err
    if values.size == 0:
        return empty_picks()
    if values.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 columns (x y z in voxels), found {values.shape[1]}")
    name = tomogram_name or path.stem
    xyz = values * _per_tomogram(voxel_size, name, "voxel size", path)
    df = pd.DataFrame({"experiment": name, "particle_type": particle_type,
                       "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}, index=range(len(xyz)))
    return validate_picks(df, source=str(path))


def write_coords(df: pd.DataFrame, path: str | Path, *, voxel_size: VoxelSizeSpec | None,
                 keep_previous: bool = False) -> None:
    """Write picks of one tomogram and one class as ``x y z`` in voxels, atomically."""
    path = Path(path)
    df = validate_picks(df, source=str(path))
    if voxel_size is None:
        raise ValueError(f"{path}: a .coords file is in voxels; give voxel_size (--voxel-size)")
    for column, what in (("experiment", "tomograms"), ("particle_type", "classes")):
        found = sorted(df[column].unique())
        if len(found) > 1:
            raise ValueError(
                f"{path}: a .coords file holds one tomogram and one class; these picks have "
                f"{len(found)} {what} ({', '.join(found[:5])}): write one file per {column}"
            )
    xyz = df[["x", "y", "z"]].to_numpy(dtype=float).reshape(-1, 3) / _sizes(
        voxel_size, df["experiment"], path)
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        np.savetxt(tmp, xyz, fmt="%.6f", delimiter=" ")


def _per_tomogram(value: Any, name: str, what: str, path: Path) -> Any:
    """The value for tomogram ``name``: ``value`` itself, or its entry in a mapping."""
    if not isinstance(value, Mapping):
        return value
    if name not in value:
        raise ValueError(
            f"{path}: no tomogram {what} for {name!r} (given for {sorted(value)[:5]})"
        )
    return value[name]


def _sizes(voxel_size: VoxelSizeSpec, names: Any, path: Path) -> np.ndarray:
    """(N, 1) voxel size of each row's tomogram (one for all, or one per name)."""
    return np.array([float(_per_tomogram(voxel_size, n, "voxel size", path)) for n in names],
                    dtype=float).reshape(-1, 1)


def _center_xyz(shape: ShapeSpec, name: str, voxel_size: VoxelSizeSpec, path: Path
                ) -> np.ndarray:
    """Tomogram centre in Angstrom, (x, y, z), for RELION 5 centred coordinates."""
    shape = _per_tomogram(shape, name, "shape", path)
    zyx = np.asarray(shape, dtype=float)
    if zyx.shape != (3,):
        raise ValueError(f"{path}: tomogram shape must be (z, y, x), got {shape!r}")
    return zyx[::-1] * float(_per_tomogram(voxel_size, name, "voxel size", path)) / 2.0


def _optics_pixel_size(optics: pd.DataFrame | None) -> float | None:
    """The tilt-series pixel size of a single optics group, if the file has one."""
    if optics is None or "rlnTomoTiltSeriesPixelSize" not in optics or len(optics) == 0:
        return None
    sizes = optics["rlnTomoTiltSeriesPixelSize"].astype(float).unique()
    return float(sizes[0]) if len(sizes) == 1 else None


def _numbers(particles: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """The columns as floats (N, len(columns)); a value that is not a number is an error
    naming the file, the column and the value, not a bare conversion error."""
    values = np.empty((len(particles), len(columns)), dtype=float)
    for i, column in enumerate(columns):
        raw = particles[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        bad = numbers.isna() & raw.notna()
        if bad.any():
            raise ValueError(f"{path}: column {column} holds {raw[bad].iloc[0]!r}, not a number "
                             f"({int(bad.sum())} row(s))")
        values[:, i] = numbers.to_numpy(dtype=float)
    return values

"""Synthetic tomograms with known particle centres, for tests, sample data and benchmarks.

A tomogram is built like a crowded CZII phantom: real macromolecule maps (10 A templates
shipped in the package, ``templates/``) in random orientations, placed without
overlap at the per-class number densities of the real CZII training picks, plus
unlabelled distractors; then a CTF (defocus oscillation, B-factor envelope), a +-60
degree missing wedge (tilt axis y) and Gaussian noise.

Contrast: protein is dark (negative values), as in real cryo-ET. The clean signal is
scaled to unit variance inside the particles and has zero mean, so the noise standard
deviation is ``1 / sqrt(snr)``. Picks are template centres of mass in Angstrom from the
volume corner (voxel ``i`` at ``i * voxel_size``, docs/design.md, coordinates).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft, ndimage
from scipy.spatial.transform import Rotation
from scipy.special import erf

from .classes import ParticleClass, load_classes
from .io.picks import picks_from_positions, write_picks_csv
from .io.tomogram import Tomogram, write_tomogram

TEMPLATE_VOXEL_A = 10.0

# CZII class -> template map. Sizes measured on the 10 A maps: r97 = radius holding 97 %
# of the density, semi-axes from the inertia tensor. CZII radii are about half the
# largest dimension, so a map fits when its r97 / largest semi-axis is near the radius.
CLASS_TEMPLATES: dict[str, str] = {
    # hollow 24-mer-like shell, density peaking 40-60 A from the centre, r97 70 A (60 A)
    "apo-ferritin": "6pxm",
    # no beta-amylase map here; Hsp90 dimer: similar mass (~170 vs ~220 kDa), r97 67 A
    # (65 A). Small and faint next to apo-ferritin, as beta-amylase is in the real data.
    "beta-amylase": "2cg9",
    # E. coli beta-galactosidase tetramer: semi-axes 43 x 68 x 89 A, r97 85 A (90 A)
    "beta-galactosidase": "1f4a",
    # human 80S ribosome: semi-axes 105 x 118 x 149 A, r97 144 A (150 A); the yeast 80S
    # (4v94) is 226 A along its long axis, too long for 150 A
    "ribosome": "6qzp",
    # elongated ~250 A dimer (semi-axes 56 x 61 x 126 A), r97 120 A, like the 660 kDa
    # thyroglobulin dimer (130 A)
    "thyroglobulin": "7n4y",
    # hollow capsid-like shell, density peaking 120-140 A from the centre (135 A)
    "virus-like-particle": "8tux",
}
# Unlabelled molecules; other ribosomes (4v4r*, 4v7r, 4v94, 5mrc) are left out so that
# no unlabelled particle is a copy of a labelled class.
DISTRACTOR_TEMPLATES: tuple[str, ...] = (
    "1bxn", "1qvr", "1s3x", "1u6g", "2uv8", "3cf3", "3d2f", "3gl1", "3h84", "3ipm",
    "3j9i", "3qm1", "4cr2", "6utj",
)

# Crowding, measured on czii_train_picks.csv (7 tomograms of 184 x 630 x 630 at 10 A):
# mean particles per tomogram; z of the picks ~ Gaussian about the slab middle with an
# SD of ~350 A; nearest neighbours at median 1.3 x (r_i + r_j), a quarter closer than
# 1.0 x: clustered (uniform placement in the slab gives a median of 1.8 x).
CZII_COUNTS_PER_TOMOGRAM: dict[str, float] = {
    "apo-ferritin": 53.6, "beta-amylase": 12.4, "beta-galactosidase": 16.0,
    "ribosome": 47.3, "thyroglobulin": 35.9, "virus-like-particle": 16.1,
}
OTHER_CLASS_COUNT = 30.2  # the CZII mean, for classes of other names
CZII_AREA_A2 = 6300.0 * 6300.0
SLAB_SD_A = 350.0
MIN_DISTANCE_FACTOR = 0.9  # centres at least 0.9 x (r_i + r_j) apart
CLUSTER_FRACTION = 0.5  # share of proposals put next to an already placed particle
CLUSTER_GAP = (0.9, 1.4)  # their distance, in units of r_i + r_j
PLACEMENT_TRIES = 60
BLOB_FRACTION = 1.0 / 3.0  # share of distractors that are random blobs, not maps

# Image formation (300 kV). The defocus is drawn per tomogram.
WAVELENGTH_A = 0.0197
DEFOCUS_RANGE_A = (25000.0, 40000.0)
AMPLITUDE_CONTRAST = 0.07
B_FACTOR_A2 = 1000.0
TILT_RANGE_DEG = 60.0
# SNR 0.05: a tiny 3D U-Net (600 CPU steps) reaches F1@0.5r ~1.0 on the VLP and
# apo-ferritin, 0.7 ribosome, 0.35 thyroglobulin, <0.1 beta-galactosidase/-amylase.
DEFAULT_SNR = 0.05
DEFAULT_DISTRACTORS = 0.5


@dataclasses.dataclass(frozen=True)
class Template:
    """A cubic density box (protein positive, ~1 inside) and its voxel size."""

    density: np.ndarray
    center: np.ndarray  # centre of mass in box voxels (z, y, x)
    radius_A: float  # r97: radius holding 97 % of the density
    voxel_size: float


def simulate_tomogram(
    shape: Sequence[int] = (64, 128, 128),
    voxel_size: float = 10.0,
    classes: Sequence[ParticleClass] | None = None,
    snr: float | None = None,
    seed: int = 0,
    density: float = 1.0,
    distractors: float = DEFAULT_DISTRACTORS,
    name: str = "sim_000",
) -> tuple[Tomogram, pd.DataFrame]:
    """Simulate one tomogram (float32, z, y, x) and its picks table (experiment = name).

    ``classes`` defaults to the six CZII classes. ``density`` multiplies the real CZII
    number densities; ``distractors`` is the expected number of unlabelled particles per
    labelled one. ``snr`` is the signal variance inside the particles over the noise
    variance: ``None`` means ``DEFAULT_SNR``, ``float("inf")`` the noiseless volume. The
    same seed gives the same layout and clean signal whatever the SNR.
    """
    shape = _check_shape(shape)
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel size must be a positive number of Angstrom, got {voxel_size}")
    snr = DEFAULT_SNR if snr is None else float(snr)
    if not snr > 0:
        raise ValueError(f"snr must be > 0 (inf for no noise), got {snr}")
    if density < 0 or distractors < 0:
        raise ValueError("density and distractors must be >= 0")
    classes = list(load_classes("czii") if classes is None else classes)
    layout_ss, noise_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(layout_ss)

    items = _draw_particles(classes, shape, voxel_size, density, distractors, rng)
    radii = np.array([item[0] for item in items], dtype=float)
    positions, placed = place_particles(radii, (np.asarray(shape) - 1) * voxel_size, rng)

    templates = [items[i][1] for i in placed]
    rotations = [_random_rotation(rng) for _ in placed]
    defocus_A = rng.uniform(*DEFOCUS_RANGE_A)
    mask = particle_mask(shape, voxel_size, positions, radii[placed])
    data = image_formation(_render_all(shape, voxel_size, templates, positions, rotations),
                           voxel_size, defocus_A, snr, mask, noise_ss)

    labels = [items[i][2] for i in placed]
    is_labelled = np.array([label is not None for label in labels], dtype=bool)
    picks = picks_from_positions(positions[is_labelled], name,
                                 [label for label in labels if label is not None])
    return Tomogram(data=data, voxel_size=float(voxel_size), name=name), picks


def simulate_dataset(
    out_dir: str | Path,
    n: int,
    shape: Sequence[int] = (64, 128, 128),
    voxel_size: float = 10.0,
    snr: float | None = None,
    seed: int = 0,
    classes: Sequence[ParticleClass] | None = None,
    density: float = 1.0,
    distractors: float = DEFAULT_DISTRACTORS,
) -> pd.DataFrame:
    """Write ``n`` tomograms to ``out_dir/tomograms/sim_XXX.mrc`` and all picks to
    ``out_dir/picks.csv``; return the picks.

    Tomogram ``i`` uses a seed derived from ``(seed, i)``, so it does not depend on ``n``.
    The other arguments are those of :func:`simulate_tomogram`.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out_dir = Path(out_dir)
    (out_dir / "tomograms").mkdir(parents=True, exist_ok=True)
    tables = []
    for i in range(n):
        tomo_seed = int(np.random.SeedSequence((seed, i)).generate_state(1)[0])
        tomogram, picks = simulate_tomogram(
            shape, voxel_size, classes, snr, tomo_seed, density, distractors, f"sim_{i:03d}"
        )
        write_tomogram(out_dir / "tomograms" / f"{tomogram.name}.mrc", tomogram.data,
                       voxel_size)
        tables.append(picks)
    picks = pd.concat(tables, ignore_index=True)
    write_picks_csv(picks, out_dir / "picks.csv")
    return picks


def _draw_particles(
    classes: Sequence[ParticleClass], shape: tuple[int, int, int], voxel_size: float,
    density: float, distractors: float, rng: np.random.Generator,
) -> list[tuple[float, Template, str | None]]:
    """Draw (radius in A, template, class name or None for a distractor) per particle,
    largest first so that placement rejects less."""
    labelled = [(c.radius_A, class_template(c, voxel_size), c.name) for c in classes]
    counts = _expected_counts(classes, np.asarray(shape) * voxel_size, density)
    items: list[tuple[float, Template, str | None]] = [
        labelled[i] for i, c in enumerate(counts) for _ in range(rng.poisson(c))]
    maps = [stem for stem in DISTRACTOR_TEMPLATES if stem in template_maps()]
    for _ in range(rng.poisson(distractors * float(np.sum(counts)))):
        if maps and rng.random() >= BLOB_FRACTION:
            template = _map_template(maps[rng.integers(len(maps))], float(voxel_size))
        else:
            template = _blob(rng.uniform(30.0, 120.0) / voxel_size, rng, voxel_size)
        items.append((template.radius_A, template, None))
    return sorted(items, key=lambda item: -item[0])


def place_particles(
    radii_A: np.ndarray, extent_A: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Place spheres in order by rejection sampling, like the clustered CZII layouts.

    Centres lie in the volume, at least half a radius from its faces, in a slab (z
    Gaussian about the middle), at least ``MIN_DISTANCE_FACTOR * (r_i + r_j)`` apart; a
    share of proposals sits next to a placed particle. Spheres that find no room after
    ``PLACEMENT_TRIES`` proposals are dropped. Returns the (M, 3) z, y, x centres in
    Angstrom and the indices (into ``radii_A``) of the placed spheres.
    """
    extent_A = np.asarray(extent_A, dtype=float)
    positions = np.empty((len(radii_A), 3))
    placed: list[int] = []
    for index, radius in enumerate(radii_A):
        margin = np.minimum(0.5 * radius, extent_A / 2)
        for _ in range(PLACEMENT_TRIES):
            if placed and rng.random() < CLUSTER_FRACTION:
                neighbour = placed[rng.integers(len(placed))]
                direction = rng.standard_normal(3)
                distance = (radius + radii_A[neighbour]) * rng.uniform(*CLUSTER_GAP)
                candidate = positions[neighbour] + direction / np.linalg.norm(direction) * distance
            else:
                candidate = rng.uniform(margin, extent_A - margin)
                candidate[0] = _slab_z(margin[0], extent_A[0], rng)
            if np.any(candidate < margin) or np.any(candidate > extent_A - margin):
                continue
            if placed:
                gaps = np.linalg.norm(positions[placed] - candidate, axis=1)
                if np.any(gaps < MIN_DISTANCE_FACTOR * (radius + radii_A[placed])):
                    continue
            positions[index] = candidate
            placed.append(index)
            break
    order = np.array(placed, dtype=int)
    return positions[order], order


def particle_mask(
    shape: Sequence[int], voxel_size: float, zyx_A: np.ndarray, radii_A: Sequence[float]
) -> np.ndarray:
    """Boolean volume, True within ``radius`` of any centre: where the SNR is measured."""
    mask = np.zeros(tuple(shape), dtype=bool)
    for centre_A, radius_A in zip(np.asarray(zyx_A, dtype=float).reshape(-1, 3), radii_A,
                                  strict=True):
        centre, radius = centre_A / voxel_size, radius_A / voxel_size
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, mask.shape)
        if np.any(hi <= lo):
            continue
        grids = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = _squared_distance(grids, centre) <= radius**2
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= inside
    return mask


def missing_wedge_mask(shape: Sequence[int], tilt_range_deg: float = TILT_RANGE_DEG) -> np.ndarray:
    """Fourier components a +-tilt series about y measures, in ``rfftn`` layout.

    Shape (nz, 1, nx // 2 + 1), broadcast over ky: True where |kz| <= tan(tilt) |kx|.
    The missing wedge is the rest: a double cone about kz in the kx-kz plane.
    """
    nz, _, nx = _check_shape(shape)
    kz = np.abs(fft.fftfreq(nz))[:, None, None]
    kx = fft.rfftfreq(nx)[None, None, :]
    return kz <= np.tan(np.radians(tilt_range_deg)) * kx + 1e-12


def image_formation(
    density: np.ndarray,
    voxel_size: float,
    defocus_A: float,
    snr: float,
    signal_mask: np.ndarray,
    seed: int | np.random.SeedSequence = 0,
) -> np.ndarray:
    """Turn a protein density (positive) into a tomogram: CTF, missing wedge, noise.

    The CTF ``-(sqrt(1 - A^2) sin(chi) + A cos(chi)) exp(-B k^2 / 4)`` makes protein
    dark; the signal is scaled to unit variance inside ``signal_mask``; the noise is
    white Gaussian noise with the missing wedge removed as well (every frequency a tilt
    series never measured is absent from a real tomogram, noise included), scaled to the
    requested SNR (``inf``: none). Keep no other reference to ``density``: it is freed
    once transformed, which bounds the peak memory.
    """
    shape = density.shape
    wedge = missing_wedge_mask(shape)
    spectrum = fft.rfftn(density, workers=-1)
    del density
    kz2 = fft.fftfreq(shape[0], d=voxel_size).astype(np.float32) ** 2
    kyx2 = (fft.fftfreq(shape[1], d=voxel_size)[:, None] ** 2
            + fft.rfftfreq(shape[2], d=voxel_size)[None, :] ** 2).astype(np.float32)
    a = AMPLITUDE_CONTRAST
    for iz in range(shape[0]):  # one slab at a time keeps the filter's memory small
        k2 = kyx2 + kz2[iz]
        chi = np.float32(np.pi * WAVELENGTH_A * defocus_A) * k2
        ctf = -(np.float32(np.sqrt(1 - a * a)) * np.sin(chi) + np.float32(a) * np.cos(chi))
        ctf *= np.exp(np.float32(-B_FACTOR_A2 / 4) * k2) * wedge[iz]
        spectrum[iz] *= ctf
    spectrum[0, 0, 0] = 0
    signal = fft.irfftn(spectrum, shape, workers=-1)
    del spectrum
    values = signal[signal_mask] if signal_mask.any() else signal
    spread = float(np.std(values, dtype=np.float64))
    if spread > 0:
        signal *= np.float32(1.0 / spread)
    if np.isinf(snr):
        return signal
    rng = np.random.default_rng(seed)
    noise_spectrum = fft.rfftn(rng.standard_normal(shape, dtype=np.float32), workers=-1)
    noise_spectrum *= wedge
    noise_spectrum[0, 0, 0] = 0
    noise = fft.irfftn(noise_spectrum, shape, workers=-1)
    del noise_spectrum
    noise *= np.float32(1.0 / (np.sqrt(snr) * np.std(noise, dtype=np.float64)))
    signal += noise
    return signal


@functools.cache
def template_maps() -> dict[str, np.ndarray]:
    """The 10 A density maps shipped in the package (``templates/``, float16, see its
    README), by PDB id; read once, kept read-only."""
    resource = resources.files(__package__) / "templates" / "templates_10A.npz"
    with resource.open("rb") as file, np.load(file) as archive:
        maps = {stem: archive[stem] for stem in archive.files}
    for data in maps.values():
        data.flags.writeable = False
    return maps


def class_template(particle_class: ParticleClass, voxel_size: float) -> Template:
    """The class's map (by CZII name, or a class named like a shipped map), else a
    blobby ellipsoid of the class radius, the same for every tomogram."""
    stem = CLASS_TEMPLATES.get(particle_class.name, particle_class.name.lower())
    if stem in template_maps():
        return _map_template(stem, float(voxel_size))
    return _named_blob(particle_class.name, particle_class.radius_A, float(voxel_size))


@functools.lru_cache(maxsize=128)
def _map_template(stem: str, voxel_size: float) -> Template:
    """A 10 A map cropped to its support, low-passed when the simulation voxels are
    coarser (anti-aliasing). It stays at 10 A: :func:`render_particle` scales while it rotates,
    one interpolation instead of two, and memory stays small for fine voxels."""
    template = _load_map(stem)
    shrink = voxel_size / template.voxel_size
    if shrink <= 1.01:
        return template
    smooth = ndimage.gaussian_filter(template.density, 0.4 * shrink)
    return dataclasses.replace(template, density=smooth)


@functools.lru_cache(maxsize=64)
def _load_map(stem: str) -> Template:
    data = np.clip(template_maps()[stem].astype(np.float32), 0, None)
    return _crop_template(data, TEMPLATE_VOXEL_A)


@functools.lru_cache(maxsize=64)
def _named_blob(name: str, radius_A: float, voxel_size: float) -> Template:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return _blob(radius_A / voxel_size, rng, voxel_size)


def _blob(radius: float, rng: np.random.Generator, voxel_size: float) -> Template:
    """A soft ellipsoid (longest semi-axis ``radius`` voxels) with a few dense lumps."""
    half = int(np.ceil(radius)) + 2
    grid = np.stack(np.meshgrid(*[np.arange(-half, half + 1, dtype=np.float32)] * 3,
                                indexing="ij"))
    axes = radius * np.array([1.0, *rng.uniform(0.6, 1.0, 2)], dtype=np.float32)
    rho = np.sqrt(sum((g / a) ** 2 for g, a in zip(grid, axes, strict=True)))
    data = 1.0 / (1.0 + np.exp((rho - 1.0) * np.float32(2.0 * radius)))  # ~1 voxel edge
    for _ in range(4):
        centre = rng.uniform(-0.5, 0.5, 3) * axes
        lump = _squared_distance(grid, centre)
        data += 0.7 * np.exp(-lump / np.float32(2 * (radius / 4 + 0.5) ** 2)) * data
    return _crop_template(data.astype(np.float32), voxel_size)


def _crop_template(data: np.ndarray, voxel_size: float) -> Template:
    """Scale, centre on the centre of mass and cut to a ball holding 99.9 % of the mass.

    The scale sets the mean of the densest voxels holding 80 % of the mass to 1: protein
    density is about uniform, and scaling by the maximum would dim maps with one bright
    spot (8tux: 4.5x).
    """
    values = np.sort(data.ravel())[::-1]
    dense = np.searchsorted(np.cumsum(values, dtype=np.float64), 0.8 * values.sum(dtype=np.float64))
    data = data / np.float32(values[: dense + 1].mean())
    grids = np.indices(data.shape, dtype=np.float32)
    total = float(data.sum(dtype=np.float64))
    com = np.array([float((g * data).sum(dtype=np.float64)) / total for g in grids])
    distance = np.sqrt(_squared_distance(grids, com)).ravel()
    order = np.argsort(distance)
    cumulative = np.cumsum(data.ravel()[order], dtype=np.float64) / total
    r97, r999 = distance[order][np.searchsorted(cumulative, [0.97, 0.999])]
    half = int(np.ceil(r999)) + 1
    centre = np.round(com).astype(int)
    padded = np.pad(data, half)  # original voxel c sits at c + half
    box = padded[tuple(slice(c, c + 2 * half + 1) for c in centre)].copy()
    box_com = com - centre + half
    outside = _squared_distance(np.indices(box.shape), box_com) > (half - 0.5) ** 2
    box[outside] = 0
    return Template(box, box_com, float(r97) * voxel_size, voxel_size)


def _render_all(shape: tuple[int, int, int], voxel_size: float, templates: list[Template],
                positions_A: np.ndarray, rotations: list[np.ndarray]) -> np.ndarray:
    """Sum the rotated templates into a new float32 volume (protein positive)."""
    volume = np.zeros(shape, dtype=np.float32)
    for template, zyx_A, rotation in zip(templates, positions_A, rotations, strict=True):
        render_particle(volume, template, zyx_A / voxel_size, rotation, voxel_size)
    return volume


def render_particle(volume: np.ndarray, template: Template, centre: np.ndarray,
                    rotation: np.ndarray, voxel_size: float) -> None:
    """Add ``template``, rotated and resampled to ``voxel_size``, with its centre of mass
    at ``centre`` (volume voxels, sub-voxel exact) into ``volume``; only the part inside
    the volume is computed."""
    scale = voxel_size / template.voxel_size  # template voxels per volume voxel
    half = int(np.ceil((template.density.shape[0] - 1) / 2 / scale)) + 1
    base = np.round(centre).astype(int)
    lo = np.maximum(base - half, 0)
    hi = np.minimum(base + half + 1, volume.shape)
    if np.any(hi <= lo):
        return
    matrix = rotation.T * scale  # volume voxel offsets -> template voxel offsets
    offset = template.center + matrix @ (lo - centre)
    volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] += ndimage.affine_transform(
        template.density, matrix, offset, output_shape=tuple(hi - lo), order=1)


def _squared_distance(grids: Iterable[np.ndarray], centre: Iterable[float]) -> np.ndarray:
    """Squared distance to ``centre`` on (open or dense) index grids."""
    return sum((g - np.float32(c)) ** 2 for g, c in zip(grids, centre, strict=True))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (normalised Gaussian quaternion)."""
    quaternion = rng.standard_normal(4)
    return Rotation.from_quat(quaternion / np.linalg.norm(quaternion)).as_matrix()


def _expected_counts(classes: Sequence[ParticleClass], size_A: np.ndarray,
                     density: float) -> np.ndarray:
    """Expected particles per class: CZII counts per tomogram scaled by the area and by
    the share of the Gaussian slab inside the depth."""
    area = size_A[1] * size_A[2]
    slab_share = erf(size_A[0] / (2 * np.sqrt(2) * SLAB_SD_A))
    per_tomogram = np.array([CZII_COUNTS_PER_TOMOGRAM.get(c.name, OTHER_CLASS_COUNT)
                             for c in classes])
    return density * per_tomogram * area / CZII_AREA_A2 * slab_share


def _slab_z(margin: float, depth_A: float, rng: np.random.Generator) -> float:
    """A z in [margin, depth - margin], Gaussian about the middle (the ice slab)."""
    for _ in range(100):
        z = rng.normal(depth_A / 2, SLAB_SD_A)
        if margin <= z <= depth_A - margin:
            return float(z)
    return float(rng.uniform(margin, depth_A - margin))


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {tuple(shape)}")
    return dims  # type: ignore[return-value]


"""Training data: labelled and unlabelled volumes, and random crops with their targets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree

from ..classes import ParticleClass
from ..geometry import input_to_output, same_voxel_size
from ..io.picks import is_negative, positions_A, select
from ..io.tomogram import Tomogram, normalize
from ..model.heatmap import class_sigmas, render_targets
from ..model.network import SIZE_MULTIPLE

log = logging.getLogger(__name__)

#: Picks may sit this many voxels outside the volume (rounding in other tools) before
#: they are refused as belonging to another tomogram or another voxel size.
OUTSIDE_TOLERANCE_VOXELS = 2.0
#: Two picks of one class closer than this fraction of its radius mark one particle.
DUPLICATE_FRACTION = 0.2


@dataclass
class Volume:
    """A normalised volume (z, y, x) ready for the network, with optional labels."""

    name: str
    data: np.ndarray
    voxel_size: float
    positions: np.ndarray | None = None  # (N, 3) voxel indices (Tomogram.grid); None = unlabelled
    class_index: np.ndarray | None = None  # (N,)
    negatives: np.ndarray | None = None  # (M, 3) input voxel positions of rejected picks
    #: Labels hold only near its picks and negatives (a reviewed tomogram's answers): its
    #: crops are centred there and the loss counts only within a particle radius of them.
    partial: bool = False


def prepare_volume(tomogram: Tomogram, picks: pd.DataFrame | None = None,
                   classes: Sequence[ParticleClass] = (), *, partial: bool = False) -> Volume:
    """Normalise a tomogram and attach its picks (rows whose experiment is its name).

    Rows with ``role`` negative become hard negatives: positions the sampler centres crops
    on, with no target there. Picks are put in one order (class, then z, y, x), so a volume
    and the crops a seed draws from it do not depend on the order a file or the layers
    listed them. ``partial``: the picks label only their own neighbourhood (see
    :attr:`Volume.partial`), as review answers do; elsewhere nothing is known.
    """
    data = normalize(tomogram.data, name=tomogram.label)
    if picks is None:
        return Volume(tomogram.name, data, tomogram.voxel_size)
    own = select(picks, experiment=tomogram.name)
    names = [c.name for c in classes]
    unknown = sorted(set(own["particle_type"]) - set(names))
    if unknown:
        raise ValueError(f"picks of {tomogram.name}: unknown class name(s) {', '.join(unknown)}; "
                         f"known: {', '.join(names)}")
    order = np.lexsort((own["x"].to_numpy(float), own["y"].to_numpy(float),
                        own["z"].to_numpy(float), own["particle_type"].map(names.index)))
    own = own.iloc[order]
    positions = tomogram.grid.to_index(positions_A(own))
    limit = np.asarray(tomogram.shape) - 1 + OUTSIDE_TOLERANCE_VOXELS
    outside = np.any((positions < -OUTSIDE_TOLERANCE_VOXELS) | (positions > limit), axis=1)
    if outside.any():
        first = own.iloc[int(np.flatnonzero(outside)[0])]
        raise ValueError(
            f"picks of {tomogram.name}: {int(outside.sum())} pick(s) lie outside the volume "
            f"{tomogram.shape} at {tomogram.voxel_size} A/voxel, e.g. x={first.x}, y={first.y}, "
            f"z={first.z} A; are the coordinates in Angstrom, for this tomogram?"
        )
    negative = is_negative(own)
    negatives, positions = positions[negative], positions[~negative]
    own = own[~negative]
    class_index = np.array([names.index(n) for n in own["particle_type"]], dtype=int)
    radii = np.array([c.radius_A for c in classes]) / tomogram.voxel_size
    keep = unique_picks(positions, class_index, radii)
    if not keep.all():
        log.warning("picks of %s: dropped %d duplicate pick(s) (same class, closer than %.0f%% "
                    "of the radius to another pick)", tomogram.name, int((~keep).sum()),
                    100 * DUPLICATE_FRACTION)
    return Volume(tomogram.name, data, tomogram.voxel_size, positions[keep], class_index[keep],
                  negatives if len(negatives) else None, partial)


def warn_unmatched_picks(picks: pd.DataFrame, tomogram_names: Sequence[str],
                         source: object = "picks") -> list[str]:
    """Warn about runs in ``picks`` that name none of the tomograms (their rows are unused),
    so that a typo in a run name does not drop labels silently. Returns those runs."""
    unmatched = sorted(set(picks["experiment"].astype(str)) - set(tomogram_names))
    if unmatched:
        rows = int(picks["experiment"].astype(str).isin(unmatched).sum())
        log.warning("%s: %d pick(s) of run(s) %s match no tomogram given (%s) and are not "
                    "used", source, rows, ", ".join(unmatched[:10]),
                    ", ".join(list(tomogram_names)[:10]))
    return unmatched


def unique_picks(positions: np.ndarray, class_index: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Mask keeping the first of each group of same-class picks within 20% of a radius."""
    keep = np.ones(len(positions), dtype=bool)
    for cls in np.unique(class_index):
        rows = np.flatnonzero(class_index == cls)
        if len(rows) < 2:
            continue
        pairs = cKDTree(positions[rows]).query_pairs(DUPLICATE_FRACTION * radii[cls],
                                                      output_type="ndarray")
        keep[rows[pairs.max(axis=1)]] = False
    return keep


def check_training_set(labelled: Sequence[Volume], classes: Sequence[ParticleClass],
                       unlabelled: Sequence[Volume] = ()) -> float:
    """Refuse mixed voxel sizes or an empty label set; warn on classes with no picks.

    Returns the common voxel size.
    """
    if not labelled:
        raise ValueError("training needs at least one labelled tomogram")
    sizes = {v.name: v.voxel_size for v in [*labelled, *unlabelled]}
    reference = labelled[0].voxel_size
    mismatched = [f"{n} ({s} A)" for n, s in sizes.items() if not same_voxel_size(s, reference)]
    if mismatched:
        raise ValueError(f"tomograms must share one voxel size ({labelled[0].name}: {reference} "
                         f"A); these differ: {', '.join(mismatched)}")
    counts: np.ndarray = np.zeros(len(classes), dtype=int)
    for volume in labelled:
        if volume.class_index is None:
            raise ValueError(f"{volume.name}: a labelled tomogram without picks")
        counts += np.bincount(volume.class_index, minlength=len(classes))
    if counts.sum() == 0:
        raise ValueError("the labelled tomograms have no picks at all: nothing to learn from")
    for cls, count in zip(classes, counts):
        if count == 0:
            log.warning("class %s has no picks in the labelled tomograms: it will learn to "
                        "predict nothing", cls.name)
    return reference


def crop_shape_for(volumes: Sequence[Volume], crop: int) -> tuple[int, int, int]:
    """The training crop: ``crop`` per side, shrunk to fit the smallest volume (x32)."""
    smallest = np.min([v.data.shape for v in volumes], axis=0)
    shape = tuple(int(min(crop, s // SIZE_MULTIPLE * SIZE_MULTIPLE)) for s in smallest)
    if min(shape) < SIZE_MULTIPLE:
        raise ValueError(f"volumes of shape {tuple(smallest)} are too small to train on: each "
                         f"side needs at least {SIZE_MULTIPLE} voxels")
    return shape  # type: ignore[return-value]


class CropSampler:
    """Random crops: near a pick with probability ``positive_fraction``, else anywhere.

    With ``balanced_classes`` a crop near a pick is centred on a class drawn uniformly
    among the volume's classes, then one of its picks: a class with ten picks in a
    tomogram of hundreds of ribosomes is still seen in every few positive crops.

    In a volume with hard negatives, ``negative_fraction`` of the crops that are not near
    a pick are centred near a negative instead (rendered with no target there).

    Labelled volumes yield (image, target heatmap); unlabelled ones yield images only.
    All randomness comes from the torch.Generator given to :meth:`sample`, so a batch is
    reproduced exactly from the generator's seed.
    """

    def __init__(self, volumes: Sequence[Volume], crop_shape: tuple[int, int, int],
                 classes: Sequence[ParticleClass], stride: int,
                 positive_fraction: float = 0.7, negative_fraction: float = 0.5,
                 balanced_classes: bool = False) -> None:
        self.volumes = list(volumes)
        self.crop_shape = np.asarray(crop_shape)
        self.stride = stride
        self.sigmas = class_sigmas(classes, self.volumes[0].voxel_size, stride) if classes else None
        self.n_classes = len(classes)
        self.positive_fraction = positive_fraction
        self.negative_fraction = negative_fraction
        self.balanced_classes = balanced_classes

    def _origin(self, volume: Volume, generator: torch.Generator) -> np.ndarray:
        def randint(high: int) -> int:
            return int(torch.randint(0, max(1, high), (), generator=generator))

        span = np.asarray(volume.data.shape) - self.crop_shape
        labelled = volume.positions is not None and len(volume.positions)

        def around(centers: np.ndarray) -> np.ndarray:
            center = centers[randint(len(centers))]
            jitter = (torch.rand(3, generator=generator).numpy() - 0.5) * 0.8 * self.crop_shape
            origin = np.round(center + jitter - self.crop_shape / 2).astype(int)
            return np.clip(origin, 0, span)

        if volume.partial:  # only the answers' neighbourhoods are labelled
            known = [c for c in (volume.positions, volume.negatives) if c is not None and len(c)]
            if known:
                return around(np.concatenate(known))
        if (volume.positions is not None and labelled
                and torch.rand((), generator=generator) < self.positive_fraction):
            if self.balanced_classes and volume.class_index is not None:
                present = np.unique(volume.class_index)
                chosen = present[randint(len(present))]
                return around(volume.positions[volume.class_index == chosen])
            return around(volume.positions)
        if volume.negatives is not None and len(volume.negatives) and \
                torch.rand((), generator=generator) < self.negative_fraction:
            return around(volume.negatives)
        return np.array([randint(s + 1) for s in span])

    def _target(self, volume: Volume, origin: np.ndarray) -> np.ndarray:
        if volume.positions is None or volume.class_index is None or self.sigmas is None:
            raise ValueError(f"{volume.name}: no picks or classes to make a target from")
        out_shape = cast("tuple[int, int, int]",
                         tuple(int(s) for s in self.crop_shape // self.stride))
        reach = 3 * self.sigmas.max() * self.stride
        local = volume.positions - origin
        near = np.all((local > -reach) & (local < self.crop_shape + reach), axis=1)
        target = render_targets(input_to_output(local[near], self.stride),
                                volume.class_index[near], out_shape, self.sigmas)
        if volume.partial:
            target[:, ~self._known(volume, origin, out_shape)] = np.nan
        return target

    def _known(self, volume: Volume, origin: np.ndarray, out_shape: tuple[int, int, int]
               ) -> np.ndarray:
        """Output voxels of the crop at ``origin`` within a particle radius of a label of a
        partial volume: a pick's class radius, or the smallest radius around a negative
        (a rejected pick says only that no particle is centred there)."""
        assert self.sigmas is not None and volume.class_index is not None
        radii = 2 * self.sigmas  # sigma is half the radius, in output voxels
        centres = [volume.positions, volume.negatives]
        reach = [radii[volume.class_index],
                 np.full(0 if volume.negatives is None else len(volume.negatives), radii.min())]
        grid = np.indices(out_shape, dtype=np.float32).reshape(3, -1).T
        known = np.zeros(len(grid), dtype=bool)
        for positions, radius in zip(centres, reach):
            if positions is None:
                continue
            local = input_to_output(positions - origin, self.stride)
            for centre, r in zip(local, radius):
                if np.all((centre > -r) & (centre < np.asarray(out_shape) + r)):
                    known |= ((grid - centre) ** 2).sum(axis=1) <= r * r
        return known.reshape(out_shape)

    def sample(self, batch_size: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch (B, 1, d, h, w) and, for labelled volumes, targets (B, C, d/2, h/2, w/2)."""
        images, targets = [], []
        for _ in range(batch_size):
            volume = self.volumes[int(torch.randint(0, len(self.volumes), (),
                                                    generator=generator))]
            origin = self._origin(volume, generator)
            z, y, x = origin
            d, h, w = self.crop_shape
            images.append(np.asarray(volume.data[z:z + d, y:y + h, x:x + w], dtype=np.float32))
            if volume.positions is not None:
                targets.append(self._target(volume, origin))
        image = torch.from_numpy(np.stack(images))[:, None]
        target = torch.from_numpy(np.stack(targets)) if targets else None
        return image, target

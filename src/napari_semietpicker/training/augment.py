"""Augmentations: geometric (shared by image and heatmap) and intensity (image only).

All work on torch tensors of shape (B, C, D, H, W) so they run on the training device.
The strong augmentation of co-training (CryoET DropBlock) lives here too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SPATIAL = (2, 3, 4)  # z, y, x dims of (B, C, D, H, W)


def random_flip_rot(image: torch.Tensor, target: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flips (each axis) and 90-degree yx rotation on image and target.

    Flipping an input of even side maps output-grid index i to n-1-i exactly, so the
    stride-2 target stays aligned. Rotation is in the yx plane only: it keeps the
    missing wedge's tilt axis in a physically plausible place (around y or x).
    """
    flips = [d for d in SPATIAL if torch.rand((), generator=generator) < 0.5]
    if flips:
        image, target = image.flip(flips), target.flip(flips)
    if image.shape[3] == image.shape[4]:
        k = int(torch.randint(0, 4, (), generator=generator))
    else:  # a quarter turn would change the crop's shape
        k = 2 * int(torch.randint(0, 2, (), generator=generator))
    if k:
        image, target = image.rot90(k, (3, 4)), target.rot90(k, (3, 4))
    return image, target


def random_intensity(image: torch.Tensor, generator: torch.Generator,
                     strength: float = 1.0) -> torch.Tensor:
    """Per-sample contrast scale, offset and additive Gaussian noise."""
    b = image.shape[0]
    shape = (b, 1, 1, 1, 1)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(shape, generator=generator)).to(image.device)

    scale = uniform(1 - 0.25 * strength, 1 + 0.25 * strength)
    offset = uniform(-0.2 * strength, 0.2 * strength)
    noise_std = uniform(0.0, 0.3 * strength)
    noise = torch.randn(image.shape, generator=generator).to(image.device)
    return image * scale + offset + noise * noise_std


def random_blur(image: torch.Tensor, generator: torch.Generator,
                max_sigma: float = 1.0, p: float = 0.5) -> torch.Tensor:
    """Gaussian blur (separable, sigma up to ``max_sigma`` voxels) with probability p."""
    if torch.rand((), generator=generator) >= p:
        return image
    sigma = float(0.3 + (max_sigma - 0.3) * torch.rand((), generator=generator))
    radius = max(1, int(round(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[1]
    out = image
    for dim in range(3):
        shape = [1, 1, 1]
        shape[dim] = kernel.numel()
        weight = kernel.reshape(1, 1, *shape).repeat(c, 1, 1, 1, 1)
        padding = [0, 0, 0]
        padding[dim] = radius
        out = F.conv3d(out, weight, padding=tuple(padding), groups=c)
    return out


def dropblock_mask(shape: tuple[int, ...], drop_rate: float, generator: torch.Generator,
                   kernel: int = 3, device: torch.device | str = "cpu") -> torch.Tensor:
    """CryoET DropBlock mask (True = occluded), as in the paper's section 2.4.

    Seeds are Bernoulli with a rate chosen so that, after growing each seed to a
    ``kernel``-cube by max-pooling (stride 1), about ``drop_rate`` of voxels are dropped:
    small blocks hide parts of particles but rarely a whole one.
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop rate must be in [0, 1), got {drop_rate}")
    # P(voxel dropped) = 1 - (1 - gamma)^(k^3)  =>  gamma from the wanted rate.
    gamma = 1.0 - (1.0 - drop_rate) ** (1.0 / kernel**3)
    seeds = (torch.rand(shape, generator=generator) < gamma).float().to(device)
    grown = F.max_pool3d(seeds, kernel, stride=1, padding=kernel // 2)
    return grown > 0.5


def dropblock(image: torch.Tensor, drop_rate: float, generator: torch.Generator,
              kernel: int = 3) -> torch.Tensor:
    """Occlude DropBlock regions with noise of each crop's own mean and spread."""
    mask = dropblock_mask(tuple(image.shape), drop_rate, generator, kernel, image.device)
    mean = image.mean(dim=SPATIAL, keepdim=True)
    std = image.std(dim=SPATIAL, keepdim=True)
    fill = mean + std * torch.randn(image.shape, generator=generator).to(image.device)
    return torch.where(mask, fill, image)


def strong_augment(image: torch.Tensor, generator: torch.Generator, drop_rate: float = 0.1,
                   use_dropblock: bool = True) -> torch.Tensor:
    """The student's view in co-training: intensity changes, blur, and DropBlock."""
    image = random_blur(random_intensity(image, generator, strength=1.5), generator)
    return dropblock(image, drop_rate, generator) if use_dropblock else image

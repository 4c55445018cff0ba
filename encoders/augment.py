"""Batched SimCLR augmentations on pixel tensors, on whatever device the batch lives.

Each image in a batch (B, C, H, W) in [0, 1] gets its own random draw. The views follow SimCLR
(Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
Appendix A): a random resized crop with horizontal flip, colour jitter (brightness, contrast,
saturation, hue) with probability 0.8 and grey-scale with probability 0.2 for colour images; for
the 8x8 digits, mild crops, small rotations and shifts, and Gaussian pixel noise instead.

Example:
    >>> config = AugmentConfig.for_dataset("cifar10")
    >>> view = augment(images, config, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """One SimCLR view's random transformations.

    Attributes:
        crop_scale: range of the crop's area as a fraction of the image.
        crop_ratio: range of the crop's aspect ratio (width / height).
        flip: flip horizontally with probability 1/2.
        max_rotation: largest rotation, in degrees (uniform in +-max_rotation).
        max_shift: largest translation, as a fraction of the image side.
        jitter_strength: colour-jitter strength s (brightness, contrast and saturation 0.8 s,
            hue 0.2 s).
        jitter_probability: chance that colour jitter is applied.
        grayscale_probability: chance of converting to grey-scale (colour images only).
        noise_std: standard deviation of additive Gaussian pixel noise.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    max_rotation: float = 0.0
    max_shift: float = 0.0
    jitter_strength: float = 0.5
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    noise_std: float = 0.0

    @classmethod
    def for_dataset(cls, name: str) -> AugmentConfig:
        """SimCLR's colour-image views, or mild geometric moves plus noise for grey digits."""
        if name == "digits":
            return cls(
                crop_scale=(0.6, 1.0),
                flip=False,
                max_rotation=10.0,
                max_shift=0.1,
                jitter_strength=0.0,
                grayscale_probability=0.0,
                noise_std=0.1,
            )
        if name in ("mnist", "fashion-mnist"):
            return cls(
                crop_scale=(0.4, 1.0),
                flip=name == "fashion-mnist",
                max_rotation=10.0,
                jitter_strength=0.0,
                grayscale_probability=0.0,
                noise_std=0.1,
            )
        return cls()


def _uniform(
    low: float, high: float, count: int, like: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    return (
        torch.rand(count, generator=generator, device=like.device, dtype=like.dtype) * (high - low)
        + low
    )


def geometric(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random resized crop, flip, rotation and shift in one bilinear resampling per image."""
    count = images.shape[0]
    area = _uniform(*config.crop_scale, count, images, generator)
    log_ratio = _uniform(
        math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1]), count, images, generator
    )
    width = torch.sqrt(area * log_ratio.exp()).clamp(
        max=1.0
    )  # crop side as a fraction of the image
    height = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    centre_x = _uniform(-1, 1, count, images, generator) * (1 - width)  # in [-1, 1] grid units
    centre_y = _uniform(-1, 1, count, images, generator) * (1 - height)
    centre_x = centre_x + _uniform(
        -2 * config.max_shift, 2 * config.max_shift, count, images, generator
    )
    centre_y = centre_y + _uniform(
        -2 * config.max_shift, 2 * config.max_shift, count, images, generator
    )
    angle = _uniform(-config.max_rotation, config.max_rotation, count, images, generator) * (
        math.pi / 180
    )
    mirror = torch.ones_like(width)
    if config.flip:
        mirror = torch.where(
            torch.rand(count, generator=generator, device=images.device) < 0.5, -mirror, mirror
        )
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [  # output grid -> input grid, (B, 2, 3)
            torch.stack([width * cos * mirror, -height * sin, centre_x], dim=1),
            torch.stack([width * sin * mirror, height * cos, centre_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601) of RGB images, (B, 3, H, W) -> (B, 1, H, W)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    return torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images by ``turns`` (B,) of a full circle, in YIQ space."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        device=images.device,
        dtype=images.dtype,
    )
    angle = 2 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotation = torch.stack(
        [
            torch.stack([one, zero, zero], 1),
            torch.stack([zero, cos, -sin], 1),
            torch.stack([zero, sin, cos], 1),
        ],
        1,
    )  # (B, 3, 3)
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images)


def colour(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Colour jitter (with probability jitter_probability) then grey-scale, for RGB images."""
    count, strength = images.shape[0], config.jitter_strength
    if strength > 0:

        def factor(amount: float) -> torch.Tensor:
            return (
                _uniform(1 - amount, 1 + amount, count, images, generator)
                .clamp(min=0)
                .view(-1, 1, 1, 1)
            )

        jittered = images * factor(0.8 * strength)
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((jittered - mean) * factor(0.8 * strength) + mean).clamp(0, 1)
        grey = _grey(jittered)
        jittered = ((jittered - grey) * factor(0.8 * strength) + grey).clamp(0, 1)
        jittered = _rotate_hue(
            jittered, _uniform(-0.2 * strength, 0.2 * strength, count, images, generator)
        )
        chosen = (
            torch.rand(count, generator=generator, device=images.device) < config.jitter_probability
        )
        images = torch.where(chosen.view(-1, 1, 1, 1), jittered.clamp(0, 1), images)
    if config.grayscale_probability > 0:
        chosen = (
            torch.rand(count, generator=generator, device=images.device)
            < config.grayscale_probability
        )
        images = torch.where(chosen.view(-1, 1, 1, 1), _grey(images).expand_as(images), images)
    return images


def augment(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """One random SimCLR view of each image.

    Args:
        images: (B, C, H, W) pixels in [0, 1].
        config: the transformations.
        generator: a torch.Generator on the images' device (the view is a function of its state).

    Returns:
        (B, C, H, W) views in [0, 1] (noise is added before the final clamp).
    """
    views = geometric(images, config, generator)
    if images.shape[1] == 3:
        views = colour(views, config, generator)
    if config.noise_std > 0:
        views = views + config.noise_std * torch.randn(
            views.shape, generator=generator, device=views.device, dtype=views.dtype
        )
    return views.clamp(0, 1)


def pad_crop_flip(
    images: torch.Tensor, padding: int, generator: torch.Generator
) -> torch.Tensor:
    """The standard CIFAR training augmentation, batched: zero-pad each side by ``padding``,
    take a random crop of the original size, and flip it horizontally with probability 1/2
    (torchvision's ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``, as in the
    training code of Cohen et al. 2019).

    Args:
        images: (B, C, H, W) pixels.
        padding: zero border added to each side, >= 0.
        generator: a torch.Generator on the images' device.

    Returns:
        (B, C, H, W) crops; each image gets its own offsets and flip.

    Raises:
        ValueError: if padding < 0.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    count, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    device = images.device
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    flip = torch.rand(count, generator=generator, device=device) < 0.5
    columns = torch.arange(width, device=device).expand(count, width)  # (B, W)
    columns = torch.where(flip.view(-1, 1), columns.flip(1), columns) + left.view(-1, 1)
    rows = torch.arange(height, device=device).view(1, -1) + top.view(-1, 1)  # (B, H)
    batch = torch.arange(count, device=device).view(-1, 1, 1)
    crops = padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), columns.unsqueeze(1)]  # (B,H,W,C)
    return crops.permute(0, 3, 1, 2).contiguous()  # (B, H, W, C) -> (B, C, H, W)

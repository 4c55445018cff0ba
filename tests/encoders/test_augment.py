"""SimCLR augmentations: ranges, reproducibility, and exact identities of the transforms."""

from __future__ import annotations

import torch

from encoders.augment import AugmentConfig, _rotate_hue, augment, colour, geometric

IDENTITY = AugmentConfig(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip=False,
    jitter_strength=0.0,
    grayscale_probability=0.0,
)


def _images(shape=(6, 3, 16, 16)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def test_views_stay_in_pixel_range_and_are_reproducible():
    images = _images()
    for name in ("cifar10", "digits"):
        config = AugmentConfig.for_dataset(name)
        batch = images if name == "cifar10" else images[:, :1]
        first = augment(batch, config, torch.Generator().manual_seed(3))
        again = augment(batch, config, torch.Generator().manual_seed(3))
        other = augment(batch, config, torch.Generator().manual_seed(4))
        assert first.shape == batch.shape and float(first.min()) >= 0 and float(first.max()) <= 1
        assert torch.equal(first, again) and not torch.equal(first, other)


def test_full_crop_without_moves_is_the_identity():
    images = _images()
    assert torch.allclose(
        geometric(images, IDENTITY, torch.Generator().manual_seed(0)), images, atol=1e-6
    )


def test_forced_flip_mirrors_the_image():
    images = _images()
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=True)
    out = geometric(images, config, torch.Generator().manual_seed(0))
    flipped = images.flip(-1)
    per_image_flip = [torch.allclose(o, f, atol=1e-6) for o, f in zip(out, flipped)]
    per_image_same = [torch.allclose(o, i, atol=1e-6) for o, i in zip(out, images)]
    assert all(a or b for a, b in zip(per_image_flip, per_image_same)) and any(per_image_flip)


def test_grayscale_makes_channels_equal_and_hue_rotation_keeps_luma():
    images = _images()
    grey = colour(
        images, AugmentConfig(jitter_strength=0.0, grayscale_probability=1.0), torch.Generator()
    )
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    turns = torch.linspace(-0.5, 0.5, images.shape[0])
    rotated = _rotate_hue(images, turns)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((rotated * luma).sum(1), (images * luma).sum(1), atol=1e-5)
    assert torch.allclose(_rotate_hue(images, torch.ones(images.shape[0])), images, atol=1e-5)

"""The shipped models: names, metadata, size, and accuracy on the digits test split."""

from __future__ import annotations

import pytest
import torch

import encoders
from encoders.checkpoint import PRETRAINED_DIR
from encoders.data import load_dataset

SHIPPED_SIGMAS = (0.12, 0.25, 0.50, 1.00)
# The CIFAR-10 classifiers of docs/cifar10.md, shipped as each finishes training.
CIFAR10_MODELS = ("cifar10-cohen-sigma0.25", "cifar10-rush-sigma0.25",
                  "cifar10-rush-consistency-sigma0.25", "cifar10-cohen-sigma0.50",
                  "cifar10-rush-sigma0.50")


def test_list_pretrained_names_the_four_digits_models_and_the_cifar10_ones():
    names = encoders.list_pretrained()
    assert names == sorted(names)
    assert [name for name in names if name.startswith("digits")] == [
        f"digits-sigma{s:.2f}" for s in SHIPPED_SIGMAS]
    assert set(names) - {f"digits-sigma{s:.2f}" for s in SHIPPED_SIGMAS} <= set(CIFAR10_MODELS)


@pytest.mark.parametrize("name", CIFAR10_MODELS)
def test_shipped_cifar10_model_is_a_small_resnet20_of_its_sigma(name):
    if name not in encoders.list_pretrained():
        pytest.skip(f"{name} is not shipped yet")
    assert (PRETRAINED_DIR / f"{name}.pt").stat().st_size < 1_000_000
    metadata = encoders.read_metadata(name)
    assert (metadata["dataset"], metadata["architecture"], metadata["input_shape"]) == (
        "cifar10-jpeg", "cifar_resnet20", [3, 32, 32])
    assert metadata["sigma"] == pytest.approx(float(name.rsplit("sigma", 1)[1]))
    model = encoders.load_classifier(name)
    assert not model.training and model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("sigma", SHIPPED_SIGMAS)
def test_shipped_model_loads_with_its_metadata_and_is_small(sigma):
    name = encoders.pretrained_name("digits", sigma)
    assert (PRETRAINED_DIR / f"{name}.pt").stat().st_size < 1_000_000
    metadata = encoders.read_metadata(name)
    assert metadata["sigma"] == pytest.approx(sigma)
    assert (metadata["dataset"], metadata["num_classes"], metadata["input_shape"]) == (
        "digits",
        10,
        [1, 8, 8],
    )
    model = encoders.load_classifier(name)
    assert not model.training and model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_sigma_025_model_is_accurate_on_noisy_digits():
    # The target: >= 96% on noisy test images at sigma=0.25 (mean over draws). Here one draw
    # of noise on 360 images; the binomial sd of one draw at p=0.96 is sqrt(.96*.04/360) = 1.0 pt,
    # so the floor of 93% is 3 sd under the target; clean accuracy must be at least as high.
    model = encoders.load_classifier("digits-sigma0.25")
    test = load_dataset("digits", "test")
    generator = torch.Generator().manual_seed(0)
    noisy = test.images + 0.25 * torch.randn(test.images.shape, generator=generator)
    with torch.inference_mode():
        noisy_accuracy = (model(noisy).argmax(1) == test.labels).float().mean().item()
        clean_accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert noisy_accuracy >= 0.93
    assert clean_accuracy >= 0.93

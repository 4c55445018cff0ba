"""The RUSH recipe end to end on tiny CIFAR-10 files in the real format, with the ResNet-18."""

from __future__ import annotations

import pytest
import torch

import encoders
from certify import ABSTAIN, certify
from encoders.data import load_dataset
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain


@pytest.mark.slow
def test_pretrain_finetune_load_and_certify_on_cifar10_files(cifar10_root, tmp_path):
    encoder = pretrain(
        PretrainConfig(
            dataset="cifar10",
            root=str(cifar10_root),
            out=str(tmp_path / "simclr.pt"),
            epochs=1,
            batch_size=8,
            device="cpu",
        )
    )
    classifier = finetune(
        FinetuneConfig(
            sigma=0.5,
            out=str(tmp_path / "rush.pt"),
            encoder=str(encoder),
            dataset="cifar10",
            root=str(cifar10_root),
            epochs=1,
            batch_size=8,
            device="cpu",
        )
    )
    metadata = encoders.read_metadata(classifier)
    assert (metadata["architecture"], metadata["input_shape"], metadata["num_classes"]) == (
        "resnet18",
        [3, 32, 32],
        10,
    )
    model = encoders.load_classifier(classifier)
    image, _ = load_dataset("cifar10", "test", cifar10_root)[0]
    cert = certify(
        model,
        image,
        sigma=0.5,
        n0=8,
        n=16,
        alpha=0.001,
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
    )
    assert cert.label == ABSTAIN or 0 <= cert.label < 10
    assert cert.radius >= 0 and cert.samples == 16

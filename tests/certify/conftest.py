"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoders.backbones import build_classifier
from encoders.checkpoint import save_checkpoint, versions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small digits CNN with fixed random weights, trained at sigma 0.25 (as metadata says)."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, (1, 8, 8), [0.3], [0.4])
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    metadata = {"architecture": "small_cnn", "dataset": "digits", "sigma": 0.25,
                "num_classes": 10, "input_shape": [1, 8, 8], "recipe": {"test": True},
                "versions": versions()}
    save_checkpoint(path, "classifier", metadata, model.state_dict())
    return path

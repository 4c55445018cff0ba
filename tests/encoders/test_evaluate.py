"""Noisy accuracy against the closed form of a linear classifier, and the linear probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from encoders.data import ImageDataset
from encoders.evaluate import noisy_accuracy, probe_accuracy


def test_noisy_accuracy_matches_phi_of_distance_over_sigma(linear_model):
    # For the linear model of tests/conftest.py, an image at signed distance d from its hyperplane
    # is classified 1 under noise N(0, sigma^2 I) with probability Phi(d / sigma) exactly.
    distances = torch.linspace(-0.3, 0.61, 40)  # no image on the hyperplane itself
    images = torch.stack([linear_model.point_at_distance(float(d)) for d in distances])
    dataset = ImageDataset(images, torch.ones(40, dtype=torch.int64), num_classes=2)
    sigma, draws = 0.25, 250
    expected = float(norm.cdf(distances.numpy() / sigma).mean())
    measured = noisy_accuracy(linear_model, dataset, sigma, draws, torch.Generator().manual_seed(0))
    # 10,000 independent Bernoulli draws: sd <= 0.5 / sqrt(10,000) = 0.005; 4 sd = 0.02
    assert abs(measured - expected) < 4 * 0.5 / math.sqrt(40 * draws)
    clean = noisy_accuracy(linear_model, dataset, 0.0, draws, torch.Generator())
    assert clean == pytest.approx(float((distances > 0).float().mean()))


def test_noisy_accuracy_rejects_bad_arguments(linear_model):
    dataset = ImageDataset(
        torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), num_classes=2
    )
    with pytest.raises(ValueError, match="sigma"):
        noisy_accuracy(linear_model, dataset, -0.1, 1, torch.Generator())
    with pytest.raises(ValueError, match="draws"):
        noisy_accuracy(linear_model, dataset, 0.1, 0, torch.Generator())


def test_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.integers(0, 3, 300))
    informative = np.eye(3)[labels.numpy()] * 5 + rng.normal(size=(300, 3))
    assert probe_accuracy(informative[:200], labels[:200], informative[200:], labels[200:]) > 0.95
    # features independent of the labels: test accuracy is binomial around 1/3 with sd 0.047 over
    # 100 images, so 0.6 is more than 5 sd above chance
    noise = rng.normal(size=(300, 3))
    assert probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:]) < 0.6

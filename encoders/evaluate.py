"""Measurements of encoders and base classifiers: linear probes and accuracy under Gaussian noise.

The linear probe is the standard evaluation of a self-supervised encoder (Chen et al. 2020,
SimCLR, Section 4.1, "linear evaluation protocol"): freeze the encoder, fit a multinomial
logistic regression on its features of the training split, report accuracy on the test split.

Example:
    >>> train_features = features(embed, train, device)
    >>> probe_accuracy(train_features, train.labels, features(embed, test, device), test.labels)
    0.989
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from encoders.data import ImageDataset


def features(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: ImageDataset,
    device: torch.device,
    batch_size: int = 512,
) -> np.ndarray:
    """``embed`` applied to every image of the data set, in order, as an (N, D) float64 array."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            pixels, _ = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
            chunks.append(embed(pixels.to(device)).flatten(1).double().cpu())  # (B, ...) -> (B, D)
    return torch.cat(chunks).numpy()


def probe_accuracy(
    train_features: np.ndarray,
    train_labels: torch.Tensor,
    test_features: np.ndarray,
    test_labels: torch.Tensor,
) -> float:
    """Test accuracy of an L2-regularised (C = 1) multinomial logistic regression on standardised
    features."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    probe.fit(train_features, train_labels.numpy())
    return float(probe.score(test_features, test_labels.numpy()))


def noisy_accuracy(
    model: torch.nn.Module,
    dataset: ImageDataset,
    sigma: float,
    draws: int,
    generator: torch.Generator,
    batch_size: int = 512,
) -> float:
    """Mean accuracy of the base classifier over ``draws`` Gaussian draws per test image.

    sigma = 0 gives the clean accuracy (one pass, whatever ``draws`` is). Noise is added in
    pixel space, unclipped, as randomized smoothing adds it (Cohen et al. 2019). The model is
    put in eval mode.

    Raises:
        ValueError: if sigma < 0 or draws < 1.
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    tensors = (*model.parameters(), *model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    correct, total = 0, 0
    model.eval()
    with torch.inference_mode():
        for _ in range(draws if sigma > 0 else 1):
            for start in range(0, len(dataset), batch_size):
                pixels, labels = dataset.batch(
                    torch.arange(start, min(start + batch_size, len(dataset)))
                )
                pixels = pixels.to(device)
                noise = torch.randn(pixels.shape, generator=generator, device=generator.device).to(
                    device
                )
                logits = model(pixels + sigma * noise)
                correct += int((logits.argmax(1).cpu() == labels).sum())
                total += len(labels)
    return correct / total

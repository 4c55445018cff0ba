"""Shared fixtures: tiny models with known smoothed behaviour."""

from __future__ import annotations

import pytest
import torch


class LinearTwoClass(torch.nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as logits (0, w.x + b) over flattened pixels.

    Under Gaussian noise N(0, sigma^2 I) the smoothed classifier's top-class probability is
    Phi(d / sigma), d = |w.x + b| / |w|, so its exact certified radius is d, the distance to the
    hyperplane.
    """

    def __init__(self, weight: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight.flatten().clone())
        self.bias = bias

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        margin = batch.flatten(1) @ self.weight + self.bias  # (B,)
        return torch.stack([torch.zeros_like(margin), margin], dim=1)  # (B, 2)

    def signed_distance(self, x: torch.Tensor) -> float:
        return float((x.flatten() @ self.weight + self.bias) / self.weight.norm())

    def point_at_distance(self, distance: float) -> torch.Tensor:
        """An image (1, 4, 4) at signed distance ``distance`` from the hyperplane."""
        centre = torch.full((1, 4, 4), 0.5)
        unit = self.weight / self.weight.norm()
        shift = distance - self.signed_distance(centre)
        return centre + shift * unit.view(1, 4, 4)


@pytest.fixture
def linear_model() -> LinearTwoClass:
    weight = torch.linspace(-1.0, 1.0, 16) + 0.3
    return LinearTwoClass(weight, bias=-0.2)


class TinyCNN(torch.nn.Module):
    """A small random CNN with ten classes on (1, 8, 8) images."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 10),
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    return TinyCNN().eval()

"""The soft smoothed classifier's losses, shared by the attacks of certify/ and by training.

The soft smoothed classifier G(x) = E_e[softmax(f(x + e))], e ~ N(0, sigma^2 I), is estimated
with m noise draws e_1..e_m as (1/m) sum_j softmax(f(x + e_j)). Its cross-entropy
-log G(x)_y is SmoothAdv's attack objective (Salman et al., "Provably Robust Deep Learning via
Adversarially Trained Smoothed Classifiers", NeurIPS 2019), MACER's classification loss (Zhai et
al., ICLR 2020) and the mean prediction of consistency regularisation (Jeong and Shin, NeurIPS
2020). It is computed here once, in log space, so that it stays finite when a probability
underflows and its gradient does not vanish there.

Example:
    >>> noise = 0.25 * torch.randn(8, *images.shape)          # m = 8 draws, scaled by sigma
    >>> log_probs = noisy_logits(model, images, noise).log_softmax(dim=2)   # (8, B, K)
    >>> log_soft = log_soft_smoothed(log_probs, dim=0)        # log G(x), (B, K)
"""

from __future__ import annotations

import math

import torch
from torch import nn


def noisy_logits(model: nn.Module, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """f(x + e_j) for every draw j, in one forward pass: (B, C, H, W), (m, B, C, H, W) ->
    (m, B, K)."""
    copies, batch = noise.shape[:2]
    noisy = (pixels.unsqueeze(0) + noise).reshape(copies * batch, *pixels.shape[1:])  # (m*B, ...)
    return model(noisy).view(copies, batch, -1)  # (m, B, K)


def log_soft_smoothed(log_probs: torch.Tensor, dim: int) -> torch.Tensor:
    """log((1/m) sum_j p_j) from the log-probabilities log p_j of m draws stacked along ``dim``
    (m = log_probs.shape[dim]); that dimension is reduced away. For the probabilities of all
    classes it is log G(x), for the label's alone log G(x)_y, whose negative is the soft
    smoothed classifier's cross-entropy."""
    return torch.logsumexp(log_probs, dim=dim) - math.log(log_probs.shape[dim])


def soft_smoothed_nll(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """-log((1/m) sum_j softmax(f(x + e_j))_y) for each image: (B, C, H, W), (B,), (m, B, C, H,
    W) -> (B,), computed in log space so that it stays finite when the label's probability
    underflows."""
    copies = noise.shape[0]
    log_probs = noisy_logits(model, inputs, noise).log_softmax(dim=2)  # (m, B, K)
    chosen = log_probs.gather(2, labels.view(1, -1, 1).expand(copies, -1, 1)).squeeze(2)  # (m, B)
    return -log_soft_smoothed(chosen, dim=0)

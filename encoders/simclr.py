"""SimCLR: the projection head, the NT-Xent loss, and the model that joins them to an encoder.

Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Each of N images gives two augmented views; the 2N embeddings
z = g(f(x)) are L2-normalised, and each view must pick out its partner among the other 2N - 1
(the NT-Xent loss, Section 2.1, Algorithm 1).

Example:
    >>> model = SimCLRModel(normalize, build_encoder("small_cnn", 1))
    >>> loss = nt_xent_loss(model(view_a), model(view_b), temperature=0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.backbones import Normalize, feature_dim


class ProjectionHead(nn.Sequential):
    """The MLP g of SimCLR: Linear -> BatchNorm -> ReLU -> Linear, (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SimCLRModel(nn.Module):
    """Pixels in [0, 1] -> projections z, through normalize, encoder f and projection head g.

    Its ``normalize`` and ``encoder`` keep the names of :class:`encoders.backbones.Classifier`, so
    fine-tuning copies them by key.
    """

    def __init__(self, normalize: Normalize, encoder: nn.Module, projection_dim: int = 128) -> None:
        super().__init__()
        self.normalize = normalize
        self.encoder = encoder
        width = feature_dim(encoder)
        self.projector = ProjectionHead(width, width, projection_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(self.normalize(pixels)))


def nt_xent_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    keys: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> torch.Tensor:
    """The normalised temperature-scaled cross-entropy loss of SimCLR, averaged over all 2N views.

    For view i with partner j, l(i, j) = -log( exp(s_ij / t) / sum_{k != i} exp(s_ik / t) ), with
    s the cosine similarity; the loss is the mean of l over the 2N anchors.

    Args:
        z_a: (N, D) embeddings of the first views.
        z_b: (N, D) embeddings of the second views; row n is the partner of row n of z_a.
        temperature: t > 0.
        keys: for data-parallel training, (all_a, all_b, offset): the (M, D) embeddings of every
            process's first and second views and the row where this process's N rows start, so
            the negatives are the other 2M - 1 views of the global batch.

    Returns:
        The scalar loss. With identical embeddings everywhere it equals log(2M - 1).

    Raises:
        ValueError: if the shapes do not match or temperature <= 0.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2 or not temperature > 0:
        raise ValueError(
            f"z_a and z_b must both be (N, D) and temperature > 0, got {tuple(z_a.shape)}, "
            f"{tuple(z_b.shape)}, {temperature!r}"
        )
    all_a, all_b, offset = keys if keys is not None else (z_a, z_b, 0)
    count, total = z_a.shape[0], all_a.shape[0]
    anchors = F.normalize(torch.cat([z_a, z_b]), dim=1)  # (2N, D)
    candidates = F.normalize(torch.cat([all_a, all_b]), dim=1)  # (2M, D)
    logits = anchors @ candidates.T / temperature  # (2N, 2M)
    local = torch.arange(count, device=z_a.device) + offset  # global index of each local image
    self_index = torch.cat([local, local + total])  # an anchor's own column, excluded
    partner_index = torch.cat([local + total, local])
    logits = logits.masked_fill(F.one_hot(self_index, 2 * total).bool(), float("-inf"))
    return F.cross_entropy(logits, partner_index)

"""NT-Xent against a slow loop written from the SimCLR paper and against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.simclr import nt_xent_loss


def slow_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    """Algorithm 1 of Chen et al. (2020) as written: views interleaved as 2k-1, 2k (0-based
    2k, 2k+1),
    s_ij the cosine similarity, l(i, j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t),
    L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]."""
    views = []
    for a, b in zip(z_a.double(), z_b.double()):
        views += [a, b]

    def s(i: int, j: int) -> float:
        return float(views[i] @ views[j] / (views[i].norm() * views[j].norm()))

    def pair_loss(i: int, j: int) -> float:
        denominator = sum(math.exp(s(i, k) / temperature) for k in range(len(views)) if k != i)
        return -math.log(math.exp(s(i, j) / temperature) / denominator)

    n = len(z_a)
    return sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(n)) / (
        2 * n
    )


@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.5), (5, 4, 0.1), (8, 16, 1.0)])
def test_matches_the_slow_loop_of_the_paper(n, d, temperature):
    generator = torch.Generator().manual_seed(n)
    z_a, z_b = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
    # float32 against float64: agreement to 1e-5 relative is float32 round-off, not tuning
    assert nt_xent_loss(z_a, z_b, temperature).item() == pytest.approx(
        slow_nt_xent(z_a, z_b, temperature), rel=1e-5
    )


@pytest.mark.parametrize("n,temperature", [(1, 0.5), (4, 0.5), (16, 0.07)])
def test_identical_embeddings_give_log_of_2n_minus_1(n, temperature):
    # every logit equals 1/t, so each anchor's softmax is uniform over its 2N - 1 candidates
    z = torch.ones(n, 5) * 3.0
    assert nt_xent_loss(z, z.clone(), temperature).item() == pytest.approx(
        math.log(2 * n - 1), rel=1e-6
    )


def test_orthogonal_pairs_give_the_closed_form():
    # partners identical, different images orthogonal: positive logit 1/t, 2N - 2 negatives at 0,
    # so l = -log(e^{1/t} / (e^{1/t} + 2N - 2)) = log(1 + (2N - 2) e^{-1/t})
    n, temperature = 6, 0.5
    z = torch.eye(n) * 2.0
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    assert nt_xent_loss(z, z.clone(), temperature).item() == pytest.approx(expected, rel=1e-6)


def test_gathered_keys_reproduce_the_global_batch_loss():
    # data-parallel form: each of 3 processes scores its 4 anchors against all 12 images' views;
    # the mean over processes is the single-process loss of the whole batch
    generator = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(12, 8, generator=generator), torch.randn(12, 8, generator=generator)
    parts = [
        nt_xent_loss(
            z_a[r * 4 : (r + 1) * 4], z_b[r * 4 : (r + 1) * 4], 0.3, keys=(z_a, z_b, r * 4)
        )
        for r in range(3)
    ]
    assert torch.stack(parts).mean().item() == pytest.approx(
        nt_xent_loss(z_a, z_b, 0.3).item(), rel=1e-6
    )


def test_bad_shapes_and_temperature_are_value_errors():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.ones(2, 3), torch.ones(2, 3), 0.0)
    with pytest.raises(ValueError, match="z_a"):
        nt_xent_loss(torch.ones(2, 3), torch.ones(3, 3), 0.5)

"""The exact McNemar test against the closed form of its binomial tail, and its pairing of two
models' certified images by index."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from certify.analysis import CertifiedResults, mcnemar_exact, paired_certified


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return a, b


@pytest.mark.parametrize("only_a, only_b", [(6, 0), (0, 9), (10, 1), (3, 3), (0, 0)])
def test_p_value_is_the_two_sided_binomial_tail(only_a, only_b):
    result = mcnemar_exact(*_pairs(40, only_a, only_b, 7))
    m, extreme = only_a + only_b, max(only_a, only_b)
    # Two-sided: twice the upper tail of Binomial(m, 1/2) at the larger count, capped at 1.
    tail = sum(math.comb(m, k) for k in range(extreme, m + 1)) / 2**m
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.p_value == pytest.approx(min(1.0, 2 * tail), rel=1e-12)


def test_agrees_with_the_binomial_tail_on_random_pairs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        a, b = rng.integers(0, 2, n).tolist(), rng.integers(0, 2, n).tolist()
        ours = mcnemar_exact(a, b)
        m = ours.only_a + ours.only_b
        expected = 1.0 if m == 0 else binomtest(ours.only_a, m, 0.5).pvalue
        assert ours.p_value == pytest.approx(expected, rel=1e-9)


def test_unpaired_or_non_binary_outcomes_are_refused():
    with pytest.raises(ValueError, match="pair the same images"):
        mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError, match="correct_b"):
        mcnemar_exact([1, 0], [1, 2])


def _results(idx: list[int], correct: list[int], radius: list[float]) -> CertifiedResults:
    label = [3] * len(idx)
    predict = [3 if ok else (-1 if reach == 0 and not ok else 5)
               for ok, reach in zip(correct, radius)]
    return CertifiedResults(idx=idx, label=label, predict=predict, radius=radius,
                            correct=correct, time=[1.0] * len(idx))


def test_paired_certified_counts_images_certified_correctly_at_the_radius_by_one_only():
    # Images 0-7. A certifies 0-7 correctly at radius 0.5 (image 7 exactly at it); B gets 0 and 1
    # right at 0.6 and misses the rest: 2-4 wrong with a large radius, 5 abstains, 6 and 7 right
    # but below 0.5. B lists its rows in another order: they are paired by idx.
    a = _results(list(range(8)), [1] * 8, [0.7] * 7 + [0.5])
    b = _results([7, 6, 5, 4, 3, 2, 1, 0], [1, 1, 0, 0, 0, 0, 1, 1],
                 [0.49, 0.2, 0.0, 0.9, 0.9, 0.9, 0.6, 0.6])
    # 6 images certified by A only, none by B only: p = 2 / 2 ** 6.
    assert paired_certified(a, b, 0.5) == (6, 0, pytest.approx(2 / 2**6, rel=1e-12))
    # At 0.65 B's images 0 and 1 drop out too, and A's image 7 (radius 0.5): 7 by A only.
    assert paired_certified(a, b, 0.65)[:2] == (7, 0)
    # At 0.1 B keeps 0, 1, 6 (radius 0.2) and 7 (0.49), A all 8: 4 by A only, here as B's "other".
    assert paired_certified(b, a, 0.1)[:2] == (0, 4)


def test_paired_certified_refuses_other_images_and_a_bad_radius():
    a = _results([0, 1, 2], [1, 1, 1], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"same images; 2 idx are in one only, e\.g\. \[2, 3\]"):
        paired_certified(a, _results([0, 1, 3], [1, 1, 1], [0.5, 0.5, 0.5]), 0.0)
    for radius in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="radius"):
            paired_certified(a, a, radius)

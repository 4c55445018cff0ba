"""The exact McNemar test against the closed form of its binomial tail."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from certify.analysis import mcnemar_exact


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

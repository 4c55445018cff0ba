"""The binomial bounds against closed forms and slow references written from their definitions."""

from __future__ import annotations

import math

import pytest

from certify.guarantee import (
    clopper_pearson_lower,
    clopper_pearson_upper,
    two_sided_binomial_pvalue,
)


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def reference_lower(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson (1934): the p at which P(X >= k | p) = alpha, found by bisection."""
    if k == 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if binomial_upper_tail(k, n, middle) < alpha:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def reference_two_sided_pvalue(k: int, n: int) -> float:
    """Exact two-sided test of p = 1/2: total probability of outcomes no likelier than k."""
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize("n", [1, 7, 100, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_all_successes_closed_form(n: int, alpha: float) -> None:
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("n", [1, 50, 100_000])
def test_no_successes_gives_zero(n: int) -> None:
    assert clopper_pearson_lower(0, n, 0.001) == 0.0
    assert clopper_pearson_upper(n, n, 0.001) == 1.0


@pytest.mark.parametrize("n", [5, 20, 60])
@pytest.mark.parametrize("alpha", [0.001, 0.1])
def test_lower_bound_matches_slow_reference(n: int, alpha: float) -> None:
    for k in range(n + 1):
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(
            reference_lower(k, n, alpha), abs=1e-9
        )


def test_upper_bound_mirrors_lower() -> None:
    for k in range(31):
        assert clopper_pearson_upper(k, 30, 0.01) == pytest.approx(
            1 - reference_lower(30 - k, 30, 0.01), abs=1e-9
        )


@pytest.mark.parametrize("n", [1, 2, 9, 40])
def test_two_sided_pvalue_matches_slow_reference(n: int) -> None:
    for k in range(n + 1):
        assert two_sided_binomial_pvalue(k, n) == pytest.approx(
            reference_two_sided_pvalue(k, n), rel=1e-9
        )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: clopper_pearson_lower(1, 0, 0.1), "trials"),
        (lambda: clopper_pearson_lower(5, 4, 0.1), "successes"),
        (lambda: clopper_pearson_lower(-1, 4, 0.1), "successes"),
        (lambda: clopper_pearson_lower(1, 4, 0.0), "alpha"),
        (lambda: clopper_pearson_upper(1, 4, 1.0), "alpha"),
        (lambda: two_sided_binomial_pvalue(3, 2), "successes"),
    ],
)
def test_bad_arguments_are_refused(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()

"""The accuracy interval against SciPy's exact binomial interval, its closed forms at k = 0 and
k = n, and its coverage computed exactly from the binomial distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from certify.analysis import accuracy_interval


@pytest.mark.parametrize("total", [1, 2, 7, 36, 360, 500])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_matches_scipy_exact_interval(total: int, confidence: float) -> None:
    for correct in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        expected = stats.binomtest(correct, total).proportion_ci(confidence, method="exact")
        low, high = accuracy_interval(correct, total, confidence)
        assert low == pytest.approx(expected.low, abs=1e-10)
        assert high == pytest.approx(expected.high, abs=1e-10)


@pytest.mark.parametrize("total", [1, 10, 360])
def test_closed_forms_at_none_and_all_correct(total: int) -> None:
    # k = 0: P(K = 0 | p) = (1 - p) ** n = 0.025 at the upper end; k = n mirrors it.
    edge = 0.025 ** (1 / total)
    assert accuracy_interval(0, total) == pytest.approx((0.0, 1 - edge), abs=1e-12)
    assert accuracy_interval(total, total) == pytest.approx((edge, 1.0), abs=1e-12)


def test_covers_every_true_accuracy_at_least_as_often_as_promised() -> None:
    # Exact coverage at p: the binomial probability of the k whose interval holds p.
    total, confidence = 40, 0.95
    intervals = [accuracy_interval(k, total, confidence) for k in range(total + 1)]
    for p in np.linspace(0.001, 0.999, 199):
        pmf = stats.binom.pmf(np.arange(total + 1), total, p)
        coverage = sum(w for w, (low, high) in zip(pmf, intervals) if low <= p <= high)
        assert coverage >= confidence - 1e-12


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ((1, 0), "total"),
        ((-1, 10), "correct"),
        ((11, 10), "correct"),
        ((1.0, 10), "correct"),
        ((True, 10), "correct"),
        ((1, 10.0), "total"),
        ((1, 10, 0.0), "confidence"),
        ((1, 10, 1.0), "confidence"),
        ((1, 10, float("nan")), "confidence"),
    ],
)
def test_bad_arguments_are_refused(arguments: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        accuracy_interval(*arguments)

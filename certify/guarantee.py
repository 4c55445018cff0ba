"""The guarantee of randomized smoothing: the certificate, its binomial bounds and its radius.

Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized Smoothing" (ICML
2019), Theorem 1 with pB = 1 - pA: if the base classifier f returns class cA on x + e,
e ~ N(0, sigma^2 I), with probability pA >= pA_lower > 1/2, then the smoothed classifier
g(x) = argmax_c P(f(x + e) = c) returns cA everywhere in the L2 ball of radius
sigma * PhiInv(pA_lower) around x. pA_lower comes from a one-sided Clopper-Pearson bound on the
votes of n noise samples, so the statement holds with probability at least 1 - alpha over the noise.
``predict`` abstains unless the exact two-sided binomial test separates the top two classes
(Hung et al. 2019, as used by Cohen et al.).

Everything that turns votes into a claim lives here, in one screen.
"""

from __future__ import annotations

from typing import NamedTuple

from scipy.special import betaincinv
from scipy.stats import binomtest, norm

from certify.checks import check_alpha

ABSTAIN = -1
"""The label returned when the smoothed classifier declines to answer."""


class Certificate(NamedTuple):
    """The outcome of certifying one image.

    Attributes:
        label: the certified class, or ``ABSTAIN``.
        radius: the certified L2 radius (0.0 when abstaining).
        pA_lower: the one-sided lower confidence bound on the top class's probability.
        count: votes for the selected class among the ``samples`` estimation draws.
        samples: noise samples drawn for the estimation (selection draws not counted).
    """

    label: int
    radius: float
    pA_lower: float
    count: int  # type: ignore[assignment]  # shadows tuple.count, as Cohen-style code reads it
    samples: int


def _check_counts(successes: int, trials: int) -> None:
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    With probability at least 1 - alpha over the draw of ``successes ~ Binomial(trials, p)``,
    the returned value is <= p. It is the lower end of the two-sided interval at level
    2 * alpha, exactly as Cohen et al.'s ``_lower_confidence_bound``. Closed forms:
    ``successes == trials`` gives ``alpha ** (1 / trials)``; ``successes == 0`` gives 0.

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    check_alpha(alpha)
    if successes == 0:
        return 0.0
    # The alpha quantile of Beta(k, n - k + 1): what statsmodels' proportion_confint(method="beta")
    # returns at level 2 alpha, without its overhead (sequential looks compute many bounds).
    return float(betaincinv(successes, trials - successes + 1, alpha))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound: with probability at least 1 - alpha
    the returned value is >= p (the mirror image of :func:`clopper_pearson_lower`).

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    return 1.0 - clopper_pearson_lower(trials - successes, trials, alpha)


def two_sided_binomial_pvalue(successes: int, trials: int) -> float:
    """P-value of the exact two-sided binomial test of H0: p = 1/2 (``predict``'s abstention).

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    return float(binomtest(successes, trials, p=0.5, alternative="two-sided").pvalue)


def radius_from_bound(sigma: float, pA_lower: float) -> float:
    """Certified L2 radius sigma * PhiInv(pA_lower) (Cohen et al. 2019, Theorem 1)."""
    return float(sigma * norm.ppf(pA_lower))


def certificate_from_votes(
    candidate: int, count: int, samples: int, sigma: float, alpha: float
) -> Certificate:
    """The certificate for ``candidate`` from ``count`` of its votes among ``samples`` fresh draws,
    with the one-sided (1 - alpha) Clopper-Pearson bound as pA_lower (Cohen et al. 2019): radius
    sigma * PhiInv(pA_lower), or ``ABSTAIN`` when pA_lower < 1/2."""
    pA_lower = clopper_pearson_lower(count, samples, alpha)
    if pA_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, pA_lower, count, samples)
    return Certificate(candidate, radius_from_bound(sigma, pA_lower), pA_lower, count, samples)

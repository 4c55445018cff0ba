"""Binomial confidence bounds and tests used by randomized smoothing.

These are the two statistical primitives of Cohen, Rosenfeld and Kolter, "Certified Adversarial
Robustness via Randomized Smoothing" (ICML 2019): the one-sided Clopper-Pearson lower bound that
``certify`` turns into a radius, and the two-sided binomial test that lets ``predict`` abstain.
"""

from __future__ import annotations

from scipy.special import betaincinv
from scipy.stats import binomtest


def _check_counts(successes: int, trials: int) -> None:
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    With probability at least 1 - alpha over the draw of ``successes ~ Binomial(trials, p)``,
    the returned value is <= p. It is the lower end of the two-sided interval at level
    2 * alpha, exactly as Cohen et al.'s ``_lower_confidence_bound``.

    Closed forms: ``successes == trials`` gives ``alpha ** (1 / trials)``; ``successes == 0``
    gives 0.

    Args:
        successes: number of successes k, 0 <= k <= trials.
        trials: number of trials n >= 1.
        alpha: error probability in (0, 1).

    Returns:
        The lower bound, a float in [0, 1).

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if successes == 0:
        return 0.0
    # The alpha quantile of Beta(k, n - k + 1), what statsmodels' proportion_confint(method="beta")
    # returns at level 2 alpha, without its overhead (sequential looks compute many bounds).
    return float(betaincinv(successes, trials - successes + 1, alpha))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper confidence bound on a binomial proportion.

    The mirror image of :func:`clopper_pearson_lower`: with probability at least 1 - alpha the
    returned value is >= p.

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    return 1.0 - clopper_pearson_lower(trials - successes, trials, alpha)


def two_sided_binomial_pvalue(successes: int, trials: int) -> float:
    """P-value of the exact two-sided binomial test of H0: p = 1/2.

    ``predict`` compares the two most frequent classes: if the top class won ``successes`` of the
    ``trials`` votes cast for either of them, a p-value <= alpha rejects a tie (Hung et al. 2019,
    as used by Cohen et al.).

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_counts(successes, trials)
    return float(binomtest(successes, trials, p=0.5, alternative="two-sided").pvalue)

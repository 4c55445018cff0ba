"""A betting confidence sequence for the top-class probability pA: bounds valid at every size.

Votes X_1, X_2, ... in {0, 1} are i.i.d. Bernoulli(p) (X_i = 1 when the base classifier picks the
candidate class under noise draw i). A gambler who starts with capital 1 and, before seeing X_i,
stakes lambda_i on "X_i > m" holds after t votes the capital

    K_t(m) = prod_{i <= t} (1 + lambda_i (X_i - m)).

If the bets are predictable (lambda_i depends only on X_1 .. X_{i-1}) and keep every factor
nonnegative, K_t(p) is a nonnegative martingale with K_0 = 1 under the true p, so by Ville's
inequality P(exists t: K_t(p) >= 1 / alpha) <= alpha: the set of m not rejected,
{m : K_t(m) < 1 / alpha}, is a (1 - alpha) confidence sequence, valid simultaneously at all t and
therefore at any data-dependent stopping time (Waudby-Smith and Ramdas, "Estimating means of
bounded random variables by betting", JRSS-B 2023, arXiv 2010.09686, Sections 3-4).

The bets here are Kelly bets against a Bayesian forecast: lambda_i = (q_i - m) / (m (1 - m)) with
q_i = (a + k_{i-1}) / (a + b + i - 1), the Beta(a, b) posterior mean of p after the first i - 1
votes (k_{i-1} of them ones). Then 1 + lambda_i (X_i - m) is the ratio of the forecast's
probability of X_i to its probability under m, the product telescopes into the Beta-binomial
mixture of likelihood ratios, and after k ones in t votes

    log K_t(m) = log B(a + k, b + t - k) - log B(a, b) - k log m - (t - k) log(1 - m),

a function of the count alone: the order of votes in a batch does not matter, so batching the
draws loses nothing. This is the confidence sequence that Voracek ("Treatment of Statistical
Estimation Problems in Randomized Smoothing for Adversarial Robustness", NeurIPS 2024) applies to
randomized smoothing with the Krichevsky-Trofimov prior a = b = 1/2; here the prior may also
carry independent earlier votes (:func:`prior_from_votes`), which sharpens the bets without
touching the guarantee, since the prior is fixed before the first vote counted here.

Bounds. The likelihood k log m + (t - k) log(1 - m) increases in m up to the mean k / t, so the
rejected m below k / t form an interval [0, L_t] and those above it an interval [U_t, 1]; if
L_t > p, the truth p lies in [m, k / t] for a rejected m and is rejected too (K_t(p) >= K_t(m)).
Hence P(exists t: L_t > p or U_t < p) <= P(exists t: K_t(p) >= 1 / alpha) <= alpha: both sides
come from the one martingale, and the pair is a two-sided (1 - alpha) confidence sequence,
not 1 - 2 alpha. The running maximum of L_t (minimum of U_t) keeps the guarantee.

Example:
    >>> prior = prior_from_votes(98, 100)           # the selection votes, independent of these
    >>> lower_bound(950, 1000, 0.001, prior), upper_bound(950, 1000, 0.001, prior)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import betaln, xlog1py, xlogy

from certify.checks import check_alpha

_BISECTIONS = 48
"""Halvings of [0, k / t]: the bound is found to 2**-48 (4e-15), a radius to 1e-8 or better."""

_MARGIN = 1e-9
"""Slack on log(1 / alpha) that absorbs rounding, so a bound is never larger than the exact one."""


class BetaPrior(NamedTuple):
    """The Beta(a, b) forecaster behind the bets; a, b > 0."""

    a: float
    b: float


JEFFREYS = BetaPrior(0.5, 0.5)
"""The Krichevsky-Trofimov (Jeffreys) prior Beta(1/2, 1/2), the prior of no earlier votes."""


def prior_from_votes(successes: int, trials: int) -> BetaPrior:
    """The Jeffreys posterior Beta(successes + 1/2, trials - successes + 1/2) of earlier votes.

    The votes must be independent of the votes the confidence sequence will count (for example
    the n0 selection votes of ``certify``): then the prior is fixed before the sequence starts
    and every guarantee of this module holds conditionally on it.

    Raises:
        ValueError: if trials < 0 or successes is not in [0, trials].
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    return BetaPrior(successes + JEFFREYS.a, trials - successes + JEFFREYS.b)


def log_capital(successes, trials, m, prior: BetaPrior = JEFFREYS):
    """log K_t(m), the log capital of the bettor against the mean m, in closed form.

    Args:
        successes: ones k among the votes (an int or an array).
        trials: votes t (an int or an array broadcasting with ``successes``).
        m: the mean bet against, in (0, 1) (a float or a broadcasting array).
        prior: the Beta prior of the bets.

    Returns:
        log B(a + k, b + t - k) - log B(a, b) - k log m - (t - k) log(1 - m).
    """
    a, b = prior
    k = np.asarray(successes, dtype=float)
    t = np.asarray(trials, dtype=float)
    log_mixture = betaln(a + k, b + t - k) - betaln(a, b)
    return log_mixture - xlogy(k, m) - xlog1py(t - k, -np.asarray(m, dtype=float))


def _check(successes, trials, alpha: float, prior: BetaPrior) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(successes, dtype=float)
    t = np.asarray(trials, dtype=float)
    a, b = np.asarray(prior[0], dtype=float), np.asarray(prior[1], dtype=float)
    check_alpha(alpha)
    if k.ndim == t.ndim == a.ndim == b.ndim == 0:  # one look: plain comparisons are much cheaper
        trials_ok, successes_ok, prior_ok = bool(t >= 1), bool(0 <= k <= t), bool(a > 0 and b > 0)
    else:
        trials_ok = bool(np.all(t >= 1))
        successes_ok = bool(np.all((0 <= k) & (k <= t)))
        prior_ok = bool(np.all(a > 0) and np.all(b > 0))
    if not trials_ok:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not successes_ok:
        raise ValueError(f"successes must be in [0, trials], got {successes}")
    if not prior_ok:
        raise ValueError(f"prior must have a, b > 0, got {tuple(prior)}")
    return k, t


def lower_bound(successes, trials, alpha: float, prior: BetaPrior = JEFFREYS):
    """The lower end L_t of the (1 - alpha) betting confidence sequence for a Bernoulli mean.

    Guarantee: if the votes are i.i.d. Bernoulli(p) (and the prior is fixed before them), then
    with probability at least 1 - alpha, L_t <= p at every t at once, so also at any stopping
    time however it depends on the votes (Waudby-Smith and Ramdas 2023; Ville's inequality).

    L_t is the largest m <= k / t rejected by the bettor, log K_t(m) >= log(1 / alpha), found by
    bisection that keeps its lower end rejected (never above the exact bound); 0 when none is.

    Args:
        successes: ones k among the votes, 0 <= k <= trials (an int or an array).
        trials: votes t >= 1 (an int or an array broadcasting with ``successes``).
        alpha: error probability in (0, 1).
        prior: the Beta prior of the bets (default Jeffreys; see :func:`prior_from_votes`).

    Returns:
        L_t in [0, k / t]: a float, or an array of the broadcast shape.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> lower_bound(1000, 1000, 0.001)    # all votes agree: about 0.984
    """
    k, t = _check(successes, trials, alpha, prior)
    # Rejected m <= k / t are those whose log-likelihood is at most log_mixture - log(1 / alpha).
    level = betaln(prior.a + k, prior.b + t - k) - betaln(*prior) - math.log(1 / alpha) - _MARGIN
    if k.ndim == 0 and t.ndim == 0:
        return _scalar_lower_bound(float(k), float(t), float(level))
    k, t, level = np.broadcast_arrays(k, t, level)
    low = np.zeros(k.shape)  # always rejected (or 0, the trivial bound)
    high = k / t  # never rejected: the mixture never beats the maximum likelihood
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        rejected = xlogy(k, middle) + xlog1py(t - k, -middle) <= level
        low = np.where(rejected, middle, low)
        high = np.where(rejected, high, middle)
    return low


def _scalar_lower_bound(k: float, t: float, level: float) -> float:
    """:func:`lower_bound` for one count, the same bisection in plain floats (a look's cost)."""
    low, high = 0.0, k / t
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        log_likelihood = (k * math.log(middle) if k else 0.0) + (t - k) * math.log1p(-middle)
        if log_likelihood <= level:
            low = middle
        else:
            high = middle
    return low


def upper_bound(successes, trials, alpha: float, prior: BetaPrior = JEFFREYS):
    """The upper end U_t of the same confidence sequence: 1 - L_t of the complementary votes.

    Guarantee: with probability at least 1 - alpha, L_t <= p <= U_t at every t at once (one
    martingale bounds both sides; see the module's text).

    Args:
        successes, trials, alpha, prior: as :func:`lower_bound`.

    Returns:
        U_t in [k / t, 1]: a float, or an array of the broadcast shape.

    Raises:
        ValueError: if an argument is out of range.
    """
    k, t = _check(successes, trials, alpha, prior)
    return 1.0 - lower_bound(t - k, t, alpha, BetaPrior(prior.b, prior.a))

"""The betting confidence sequence against its closed forms, a slow per-vote reference written from
the definition, and its anytime coverage computed exactly by dynamic programming."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import betaln
from scipy.stats import beta, binom

from certify.confidence_sequence import (
    JEFFREYS,
    BetaPrior,
    log_capital,
    lower_bound,
    prior_from_votes,
    upper_bound,
)
from certify.guarantee import clopper_pearson_lower

PRIORS = [JEFFREYS, BetaPrior(1.0, 1.0), prior_from_votes(97, 100),
          prior_from_votes(60, 100)]


def capital_bet_by_bet(votes: np.ndarray, m: float, prior: BetaPrior) -> float:
    """log prod_i (1 + lambda_i (X_i - m)), lambda_i the Kelly bet against the Beta posterior mean
    of the votes before i: the capital process of Waudby-Smith and Ramdas, one vote at a time."""
    log_wealth, ones = 0.0, 0
    for i, vote in enumerate(votes):
        forecast = (prior.a + ones) / (prior.a + prior.b + i)  # uses votes 1 .. i - 1 only
        bet = (forecast - m) / (m * (1 - m))
        log_wealth += math.log1p(bet * (vote - m))
        ones += int(vote)
    return log_wealth


@pytest.mark.parametrize("prior", PRIORS)
def test_closed_form_capital_is_the_product_of_predictable_bets(prior: BetaPrior) -> None:
    rng = np.random.default_rng(0)
    for p, m in [(0.9, 0.8), (0.9, 0.95), (0.5, 0.3), (0.99, 0.999)]:
        votes = rng.random(300) < p
        expected = capital_bet_by_bet(votes, m, prior)
        assert log_capital(votes.sum(), votes.size, m, prior) == pytest.approx(expected, abs=1e-9)
        # Votes counted in a batch: their order does not change the capital.
        assert capital_bet_by_bet(rng.permutation(votes), m, prior) == pytest.approx(expected,
                                                                                      abs=1e-9)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("trials", [1, 20, 1000, 100_000])
def test_all_votes_agree_closed_form(prior: BetaPrior, trials: int) -> None:
    # k = t: log K_t(m) = log B(a + t, b) - log B(a, b) - t log m, so L_t solves it = log(1/alpha).
    alpha = 0.001
    exact = math.exp((betaln(prior.a + trials, prior.b) - betaln(*prior) + math.log(alpha))
                     / trials)
    assert lower_bound(trials, trials, alpha, prior) == pytest.approx(exact, rel=1e-9)
    assert lower_bound(trials, trials, alpha, prior) <= exact
    assert upper_bound(0, trials, alpha, BetaPrior(prior.b, prior.a)) == pytest.approx(1 - exact,
                                                                                      abs=1e-9)


@pytest.mark.parametrize(("successes", "trials"), [(1, 10), (7, 10), (520, 1000), (9_990, 10_000)])
def test_uniform_prior_closed_form(successes: int, trials: int) -> None:
    # Beta(1, 1): the mixture is 1 / ((t + 1) C(t, k)), so m <= k / t is rejected iff
    # (t + 1) P(Binomial(t, m) = k) <= alpha.
    alpha = 0.01

    def excess(m: float) -> float:
        return math.log(trials + 1) + binom.logpmf(successes, trials, m) - math.log(alpha)

    exact = brentq(excess, 1e-12, successes / trials, xtol=1e-15)
    bound = lower_bound(successes, trials, alpha, BetaPrior(1.0, 1.0))
    assert bound == pytest.approx(exact, rel=1e-8, abs=1e-12)


def test_bounds_bracket_the_mean_and_grow_with_the_count() -> None:
    trials = 200
    counts = np.arange(trials + 1)
    lower = lower_bound(counts, trials, 0.01, prior_from_votes(80, 100))
    upper = upper_bound(counts, trials, 0.01, prior_from_votes(80, 100))
    assert np.all(lower <= counts / trials) and np.all(counts / trials <= upper)
    assert np.all(np.diff(lower) >= 0) and np.all(np.diff(upper) >= 0)
    assert lower[0] == 0.0 and upper[-1] == 1.0
    # The scalar path and the array path agree.
    assert lower_bound(123, trials, 0.01, prior_from_votes(80, 100)) == lower[123]


def test_clopper_pearson_reference_is_the_projects_bound() -> None:
    k, t = np.array([0, 1, 37, 50]), np.array([50, 50, 50, 50])
    lower, _ = clopper_pearson_at_every_vote(0.01)(k, t)
    assert lower == pytest.approx([clopper_pearson_lower(int(a), 50, 0.01) for a in k], abs=1e-12)


def test_bad_arguments_are_refused() -> None:
    for args, name in [((5, 0, 0.1), "trials"), ((11, 10, 0.1), "successes"),
                       ((-1, 10, 0.1), "successes"), ((5, 10, 0.0), "alpha"),
                       ((5, 10, 1.0), "alpha")]:
        with pytest.raises(ValueError, match=name):
            lower_bound(*args)
    with pytest.raises(ValueError, match="prior"):
        upper_bound(5, 10, 0.1, BetaPrior(0.0, 1.0))
    with pytest.raises(ValueError, match="successes"):
        prior_from_votes(101, 100)


def bound_tables(bounds, horizon: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(lower, upper) for every count k <= t of every t <= horizon, from ``bounds(k, t)``."""
    t = np.repeat(np.arange(1, horizon + 1), np.arange(2, horizon + 2))  # (T (T + 3) / 2,)
    k = np.concatenate([np.arange(size + 1) for size in range(1, horizon + 1)])  # same shape
    lower, upper = bounds(k, t)
    splits = np.cumsum(np.arange(2, horizon + 1))
    return np.split(lower, splits), np.split(upper, splits)


def anytime_miscoverage(p: float, tables) -> float:
    """P(exists t <= T: L_t > p or U_t < p) exactly, for i.i.d. Bernoulli(p) votes: the mass of
    the count's paths, step by step, that first leave the sequence at t."""
    lower, upper = tables
    alive = np.array([1.0])  # P(count = k and no miscoverage yet), k = 0 .. t
    missed = 0.0
    for lower_t, upper_t in zip(lower, upper):
        alive = np.concatenate([alive * (1 - p), [0.0]]) + np.concatenate([[0.0], alive * p])
        out = (lower_t > p) | (upper_t < p)
        missed += alive[out].sum()
        alive[out] = 0.0
    return missed


def betting(alpha: float, prior: BetaPrior):
    return lambda k, t: (lower_bound(k, t, alpha, prior), upper_bound(k, t, alpha, prior))


def clopper_pearson_at_every_vote(alpha: float):
    """Not a confidence sequence: spends alpha afresh at each of the T looks (the one-sided
    Clopper-Pearson bounds are Beta quantiles)."""
    def bounds(k, t):
        lower = np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), t - k + 1), 0.0)
        upper = np.where(k < t, beta.ppf(1 - alpha, k + 1, np.maximum(t - k, 1)), 1.0)
        return lower, upper
    return bounds


def betting_on_the_votes_themselves(alpha: float):
    """Not a confidence sequence: bets chosen after seeing the votes they are paid on (the prior
    made from the very votes it bets on), so the capital is no martingale."""
    def bounds(k, t):
        peeking = BetaPrior(k + JEFFREYS.a, t - k + JEFFREYS.b)
        return lower_bound(k, t, alpha, peeking), upper_bound(k, t, alpha, peeking)
    return bounds


@pytest.mark.parametrize("prior", [JEFFREYS, prior_from_votes(95, 100),
                                   prior_from_votes(30, 100)])
def test_exact_anytime_coverage(prior: BetaPrior) -> None:
    # Ville's inequality: P(exists t: the truth leaves the sequence) <= alpha, for every p and
    # every prior fixed in advance (a prior far from p, like the last, only costs samples).
    alpha, horizon = 0.05, 400
    tables = bound_tables(betting(alpha, prior), horizon)
    for p in [0.5, 0.84, 0.95, 0.99]:
        assert anytime_miscoverage(p, tables) <= alpha


@pytest.mark.parametrize("invalid",
                         [clopper_pearson_at_every_vote, betting_on_the_votes_themselves])
def test_exact_coverage_check_catches_invalid_sequences(invalid) -> None:
    # The same computation sees the guarantee fail for rules that are not confidence sequences.
    alpha, horizon = 0.05, 400
    tables = bound_tables(invalid(alpha), horizon)
    assert max(anytime_miscoverage(p, tables) for p in [0.5, 0.84, 0.95]) > alpha


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_exact_anytime_coverage_long_horizon(alpha: float) -> None:
    horizon = 4000
    for prior in [JEFFREYS, prior_from_votes(90, 100)]:
        tables = bound_tables(betting(alpha, prior), horizon)
        for p in [0.3, 0.5, 0.7, 0.84, 0.9, 0.977, 0.999]:
            assert anytime_miscoverage(p, tables) <= alpha

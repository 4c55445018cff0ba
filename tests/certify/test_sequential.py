"""Sequential certification keeps the guarantee of fixed-n certification (ground truth: a linear
classifier's smoothed radius is its distance d to the hyperplane) while drawing fewer samples, with
either stopping rule (Clopper-Pearson looks, betting confidence sequence)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from certify import ABSTAIN, certify, confidence_sequence
from certify.guarantee import clopper_pearson_lower, clopper_pearson_upper
from certify.sequential import (
    BETTING_FINAL_SHARE,
    FINAL_SHARE,
    betting_looks,
    certify_sequential,
    look_schedule,
)

SIGMA = 0.25


def overstatement_rate(model, distance: float, trials: int, **mode) -> float:
    """Fraction of trials whose certificate claims a radius above d (or the wrong class)."""
    x = model.point_at_distance(distance)
    generator = torch.Generator().manual_seed(99)
    bad = 0
    for _ in range(trials):
        cert = certify(model, x, SIGMA, n0=10, n=1000, alpha=0.1, batch_size=1000,
                       generator=generator, **mode)
        bad += cert.label != ABSTAIN and (cert.label != 1 or cert.radius > distance)
    return bad / trials


def limit(alpha: float, trials: int) -> float:
    """alpha + 3 standard errors: an overstatement rate above it over ``trials`` independent
    trials has probability < 0.2% if each trial overstates with probability <= alpha."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


MODES = [
    # The target equals the truth: every "certified at r" answer is an overstatement.
    (0.2, {"radius": 0.2}),
    (0.05, {"radius": 0.05}),
    (0.2, {"adaptive": True, "tolerance": 0.02}),
    (0.2, {"adaptive": True, "tolerance": 0.02, "curve_radii": (0.1, 0.2, 0.3)}),
]


@pytest.mark.parametrize(("distance", "mode"), MODES)
def test_clopper_pearson_looks_overstate_at_most_alpha(linear_model, distance, mode) -> None:
    trials, alpha = 400, 0.1
    rate = overstatement_rate(linear_model, distance, trials, rule="clopper-pearson", **mode)
    assert rate <= limit(alpha, trials)


def test_betting_overstates_at_most_alpha(linear_model) -> None:
    trials, alpha = 200, 0.1
    assert overstatement_rate(linear_model, 0.2, trials, radius=0.2) <= limit(alpha, trials)


@pytest.mark.slow
@pytest.mark.parametrize(("distance", "mode"), MODES)
def test_betting_overstates_at_most_alpha_in_every_mode(linear_model, distance, mode) -> None:
    trials, alpha = 1000, 0.1
    rate = overstatement_rate(linear_model, distance, trials, rule="betting", **mode)
    assert rate <= limit(alpha, trials)


def test_peeking_without_splitting_alpha_would_be_caught(linear_model, monkeypatch) -> None:
    # Spending the whole alpha at each of many looks breaks the guarantee; the check above sees it.
    import certify.sequential as sequential

    def unsplit(n, alpha, first=8):
        sizes = [8 * 2**j for j in range(8)]
        return sequential.LookSchedule(tuple(sizes), (alpha,) * len(sizes))

    monkeypatch.setattr(sequential, "look_schedule", unsplit)
    trials, alpha = 400, 0.1
    rate = overstatement_rate(linear_model, 0.2, trials, radius=0.2, rule="clopper-pearson")
    assert rate > limit(alpha, trials)


def test_betting_looks_without_a_confidence_sequence_would_be_caught(linear_model,
                                                                      monkeypatch) -> None:
    # The betting rule's looks with bounds that are not a confidence sequence (Clopper-Pearson at
    # the whole alpha at every look) break the guarantee; the same check sees it.
    def every_look(bound):
        return lambda successes, trials, alpha, prior: bound(
            int(successes), int(trials), alpha / (1 - BETTING_FINAL_SHARE))

    monkeypatch.setattr(confidence_sequence, "lower_bound", every_look(clopper_pearson_lower))
    monkeypatch.setattr(confidence_sequence, "upper_bound", every_look(clopper_pearson_upper))
    trials, alpha = 200, 0.1
    assert overstatement_rate(linear_model, 0.2, trials, radius=0.2) > limit(alpha, trials)


@pytest.mark.parametrize("n", [1, 16, 17, 1000, 100_000])
def test_betting_looks_grow_by_the_factor_up_to_the_budget(n: int) -> None:
    sizes = betting_looks(n)
    assert sizes[-1] == n and list(sizes) == sorted(set(sizes))
    assert all(later <= max(earlier + 1, math.ceil(1.1 * earlier))
               for earlier, later in zip(sizes, sizes[1:]))


@pytest.mark.parametrize(("n", "alpha"), [(1, 0.1), (100, 0.001), (100_000, 0.001), (128, 0.05)])
def test_schedule_spends_exactly_alpha(n: int, alpha: float) -> None:
    schedule = look_schedule(n, alpha)
    assert schedule.sizes[-1] == n
    assert list(schedule.sizes) == sorted(set(schedule.sizes))
    assert sum(schedule.alphas) == pytest.approx(alpha, rel=1e-12)
    if len(schedule.sizes) > 1:
        assert schedule.alphas[-1] == pytest.approx(FINAL_SHARE * alpha)


@pytest.mark.parametrize("rule", ["betting", "clopper-pearson"])
def test_clear_cases_stop_early_and_hard_ones_use_the_budget(linear_model, rule) -> None:
    far, near = linear_model.point_at_distance(0.6), linear_model.point_at_distance(0.25)
    quick = certify(linear_model, far, SIGMA, 100, 100_000, 0.001, 10_000, radius=0.25, rule=rule,
                    generator=torch.Generator().manual_seed(0))
    assert quick.label == 1 and quick.radius >= 0.25 and quick.samples <= 128
    # pA = Phi(1) exactly at the threshold: never certified at it, and only given up once the
    # upper bound is within the final bound's width of it, which takes most of the budget.
    slow = certify(linear_model, near, SIGMA, 100, 20_000, 0.001, 10_000, radius=0.25, rule=rule,
                   generator=torch.Generator().manual_seed(0))
    assert slow.samples >= 20_000 / 4 and slow.radius < 0.25


def test_betting_stops_at_the_first_look_whose_bound_reaches_the_target() -> None:
    # Every vote goes to class 1 (selection too), so the bound after t votes has a closed form
    # (tests/certify/test_confidence_sequence.py) and the stopping look is known in advance.
    always_one = torch.nn.Linear(16, 2)
    torch.nn.init.zeros_(always_one.weight)
    always_one.bias.data = torch.tensor([0.0, 1.0])
    model = torch.nn.Sequential(torch.nn.Flatten(), always_one)
    x = torch.full((1, 4, 4), 0.5)
    alpha, n0, radius = 0.001, 100, 0.5
    prior = confidence_sequence.prior_from_votes(n0, n0)
    target = norm.cdf(radius / SIGMA)
    first = next(t for t in betting_looks(100_000) if confidence_sequence.lower_bound(
        t, t, (1 - BETTING_FINAL_SHARE) * alpha, prior) >= target)
    cert = certify(model, x, SIGMA, n0, 100_000, alpha, 1000, radius=radius)
    assert cert.samples == first and cert.count == first and cert.label == 1
    assert cert.pA_lower == confidence_sequence.lower_bound(first, first, (1 - BETTING_FINAL_SHARE)
                                                            * alpha, prior)
    # Run to the budget (no tolerance to stop sooner), the bound is the better of the sequence's
    # and the Clopper-Pearson bound spending the final share of alpha.
    full = certify(model, x, SIGMA, n0, 500, alpha, 1000, adaptive=True, tolerance=1e-9)
    assert full.samples == 500
    assert full.pA_lower == max(
        confidence_sequence.lower_bound(500, 500, (1 - BETTING_FINAL_SHARE) * alpha, prior),
        clopper_pearson_lower(500, 500, BETTING_FINAL_SHARE * alpha))


@pytest.mark.parametrize("rule", ["betting", "clopper-pearson"])
def test_adaptive_mode_settles_the_curve_radii(linear_model, rule) -> None:
    # pA = Phi(0.3 / 0.25): a tolerance of 0.2 alone stops below 0.25 here; with 0.25 on the
    # curve the image is certified there, as a fixed-n run would certify it.
    x = linear_model.point_at_distance(0.3)

    def adaptive(*curve_radii: float):
        return certify(linear_model, x, SIGMA, 100, 100_000, 0.001, 10_000, adaptive=True,
                       tolerance=0.2, curve_radii=curve_radii, rule=rule,
                       generator=torch.Generator().manual_seed(0))

    assert adaptive().radius < 0.25 <= adaptive(0.25).radius <= 0.3


def test_bad_arguments_are_refused(linear_model) -> None:
    x = linear_model.point_at_distance(0.3)
    for kwargs, name in [({"radius": 0.0}, "radius"), ({"radius": -1.0}, "radius"),
                         ({"adaptive": True, "tolerance": 0.0}, "tolerance")]:
        with pytest.raises(ValueError, match=name):
            certify(linear_model, x, SIGMA, 10, 100, 0.01, 100, **kwargs)
    with pytest.raises(ValueError, match="alpha"):
        certify_sequential(linear_model, x, SIGMA, 10, 100, 1.5, 100, radius=0.1)
    with pytest.raises(ValueError, match="rule"):
        certify(linear_model, x, SIGMA, 10, 100, 0.01, 100, radius=0.1, rule="wald")
    with pytest.raises(ValueError, match="curve_radii"):
        certify(linear_model, x, SIGMA, 10, 100, 0.01, 100, adaptive=True, curve_radii=(-0.1,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rule", ["betting", "clopper-pearson"])
def test_sequential_on_cuda(linear_model, rule) -> None:
    x = linear_model.point_at_distance(0.6)
    model = linear_model.cuda()
    cert = certify(model, x, SIGMA, 100, 100_000, 0.001, 10_000, radius=0.25, rule=rule,
                   generator=torch.Generator(device="cuda").manual_seed(0))
    assert cert.label == 1 and 0.25 <= cert.radius <= 0.6 and cert.samples < 100_000

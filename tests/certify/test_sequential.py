"""Sequential certification keeps the guarantee of fixed-n certification (ground truth: a linear
classifier's smoothed radius is its distance d to the hyperplane) while drawing fewer samples."""

from __future__ import annotations

import math

import pytest
import torch

from certify import ABSTAIN, certify
from certify.sequential import FINAL_SHARE, certify_sequential, look_schedule

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


@pytest.mark.parametrize(
    ("distance", "mode"),
    [
        # The target equals the truth: every "certified at r" answer is an overstatement.
        (0.2, {"radius": 0.2}),
        (0.05, {"radius": 0.05}),
        (0.2, {"adaptive": True, "tolerance": 0.02}),
    ],
)
def test_sequential_modes_overstate_at_most_alpha(linear_model, distance, mode) -> None:
    # Each trial overstates with probability <= alpha = 0.1 if the guarantee holds; over 400
    # independent trials the rate exceeds alpha + 3 standard errors with probability < 0.2%.
    trials, alpha = 400, 0.1
    margin = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert overstatement_rate(linear_model, distance, trials, **mode) <= alpha + margin


def test_peeking_without_splitting_alpha_would_be_caught(linear_model, monkeypatch) -> None:
    # Spending the whole alpha at each of many looks breaks the guarantee; the check above sees it.
    import certify.sequential as sequential

    def unsplit(n, alpha, first=8):
        sizes = [8 * 2**j for j in range(8)]
        return sequential.LookSchedule(tuple(sizes), (alpha,) * len(sizes))

    monkeypatch.setattr(sequential, "look_schedule", unsplit)
    trials, alpha = 400, 0.1
    margin = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert overstatement_rate(linear_model, 0.2, trials, radius=0.2) > alpha + margin


@pytest.mark.parametrize(("n", "alpha"), [(1, 0.1), (100, 0.001), (100_000, 0.001), (128, 0.05)])
def test_schedule_spends_exactly_alpha(n: int, alpha: float) -> None:
    schedule = look_schedule(n, alpha)
    assert schedule.sizes[-1] == n
    assert list(schedule.sizes) == sorted(set(schedule.sizes))
    assert sum(schedule.alphas) == pytest.approx(alpha, rel=1e-12)
    if len(schedule.sizes) > 1:
        assert schedule.alphas[-1] == pytest.approx(FINAL_SHARE * alpha)


def test_clear_cases_stop_early_and_hard_ones_use_the_budget(linear_model) -> None:
    far, near = linear_model.point_at_distance(0.6), linear_model.point_at_distance(0.25)
    quick = certify(linear_model, far, SIGMA, 100, 100_000, 0.001, 10_000, radius=0.25,
                    generator=torch.Generator().manual_seed(0))
    assert quick.label == 1 and quick.radius >= 0.25 and quick.samples <= 1024
    # pA = Phi(1) exactly at the threshold: never settled, so the whole budget is drawn.
    slow = certify(linear_model, near, SIGMA, 100, 20_000, 0.001, 10_000, radius=0.25,
                   generator=torch.Generator().manual_seed(0))
    assert slow.samples == 20_000 and slow.radius <= 0.25


def test_bad_arguments_are_refused(linear_model) -> None:
    x = linear_model.point_at_distance(0.3)
    for kwargs, name in [({"radius": 0.0}, "radius"), ({"radius": -1.0}, "radius"),
                         ({"adaptive": True, "tolerance": 0.0}, "tolerance")]:
        with pytest.raises(ValueError, match=name):
            certify(linear_model, x, SIGMA, 10, 100, 0.01, 100, **kwargs)
    with pytest.raises(ValueError, match="alpha"):
        certify_sequential(linear_model, x, SIGMA, 10, 100, 1.5, 100, radius=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sequential_on_cuda(linear_model) -> None:
    x = linear_model.point_at_distance(0.6)
    model = linear_model.cuda()
    cert = certify(model, x, SIGMA, 100, 100_000, 0.001, 10_000, radius=0.25,
                   generator=torch.Generator(device="cuda").manual_seed(0))
    assert cert.label == 1 and 0.25 <= cert.radius <= 0.6 and cert.samples < 100_000

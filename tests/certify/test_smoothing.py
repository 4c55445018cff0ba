"""The certifier against ground truth: a linear classifier's smoothed radius is its distance d to
the hyperplane (Cohen et al. 2019, Section 3.1), so every statistical claim can be checked."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from certify import ABSTAIN, Smooth, certify, predict, sample_counts

SIGMA = 0.25


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("distance_in_sigmas", [0.25, 0.5, 1.0, 2.0, 3.0])
def test_linear_radius_is_sound_and_tight(linear_model, distance_in_sigmas: float) -> None:
    # With n = 100,000 the Clopper-Pearson bound sits about 3 standard errors below
    # pA = Phi(d / sigma); for d >= sigma / 4 that costs less than 15% of the radius.
    # The radius exceeds d with probability <= alpha = 0.001 (fixed seed).
    distance = distance_in_sigmas * SIGMA
    x = linear_model.point_at_distance(distance)
    cert = certify(linear_model, x, SIGMA, n0=100, n=100_000, alpha=0.001,
                   batch_size=10_000, generator=seeded(1))
    assert cert.label == 1
    assert cert.radius <= distance
    assert cert.radius >= 0.85 * distance
    assert cert.samples == 100_000
    assert cert.radius == pytest.approx(SIGMA * norm.ppf(cert.pA_lower))


def test_linear_radius_on_the_other_side(linear_model) -> None:
    x = linear_model.point_at_distance(-0.3)
    cert = certify(linear_model, x, SIGMA, 100, 100_000, 0.001, 10_000, generator=seeded(2))
    assert cert.label == 0
    assert 0.85 * 0.3 <= cert.radius <= 0.3


def test_on_the_hyperplane_both_abstain(linear_model) -> None:
    # pA = 1/2 exactly: the lower bound exceeds 1/2 and a tie is rejected each with probability
    # at most alpha, so five seeds all abstain unless something is wrong.
    x = linear_model.point_at_distance(0.0)
    for seed in range(5):
        assert predict(linear_model, x, SIGMA, 10_000, 0.001, 5_000, seeded(seed)) == ABSTAIN
        cert = certify(linear_model, x, SIGMA, 100, 10_000, 0.001, 5_000, seeded(seed))
        assert cert.label == ABSTAIN
        assert cert.radius == 0.0


def test_predict_answers_away_from_the_hyperplane(linear_model) -> None:
    assert predict(linear_model, linear_model.point_at_distance(0.2), SIGMA, 1000, 0.001) == 1
    assert predict(linear_model, linear_model.point_at_distance(-0.2), SIGMA, 1000, 0.001) == 0


def overstatement_rate(model, distance: float, trials: int, alpha: float, bound) -> float:
    """Fraction of trials whose certificate claims more than the truth: a positive radius
    above ``distance`` or any positive radius for the wrong class."""
    x = model.point_at_distance(distance)
    generator = seeded(1234)
    bad = 0
    for _ in range(trials):
        cert = bound(model, x, generator, alpha)
        if cert.label != ABSTAIN and (cert.label != 1 or cert.radius > distance):
            bad += 1
    return bad / trials


def test_overstatement_frequency_is_at_most_alpha(linear_model) -> None:
    trials, alpha = 600, 0.1
    margin = 3 * math.sqrt(alpha * (1 - alpha) / trials)

    def cohen(model, x, generator, alpha):
        return certify(model, x, SIGMA, n0=10, n=50, alpha=alpha, batch_size=50,
                       generator=generator)

    assert overstatement_rate(linear_model, 0.1, trials, alpha, cohen) <= alpha + margin

    # The same check catches a certifier that plugs in the point estimate instead of the bound:
    # it overstates about half the time, so the check above can fail.
    def point_estimate(model, x, generator, alpha):
        counts = sample_counts(model, x, SIGMA, 50, 50, generator)
        p_hat = min(float(counts[1]) / 50, 1 - 1e-9)
        label = 1 if p_hat > 0.5 else ABSTAIN
        return type("Cert", (), {"label": label, "radius": SIGMA * norm.ppf(p_hat)})

    assert overstatement_rate(linear_model, 0.1, trials, alpha, point_estimate) > alpha + margin


def test_sample_counts_draws_exactly_n_in_remainder_batches(tiny_cnn) -> None:
    seen: list[int] = []
    tiny_cnn.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    counts = sample_counts(tiny_cnn, torch.rand(1, 8, 8), SIGMA, 1234, 500)
    assert seen == [500, 500, 234]
    assert counts.shape == (10,)
    assert counts.dtype == torch.int64
    assert int(counts.sum()) == 1234


def test_generator_makes_results_reproducible(tiny_cnn) -> None:
    x = torch.rand(1, 8, 8)
    first = certify(tiny_cnn, x, 0.5, 50, 2000, 0.01, 300, generator=seeded(7))
    second = certify(tiny_cnn, x, 0.5, 50, 2000, 0.01, 300, generator=seeded(7))
    assert first == second
    counts_a = sample_counts(tiny_cnn, x, 0.5, 999, 100, seeded(3))
    counts_b = sample_counts(tiny_cnn, x, 0.5, 999, 100, seeded(3))
    counts_c = sample_counts(tiny_cnn, x, 0.5, 999, 100, seeded(4))
    assert torch.equal(counts_a, counts_b)
    assert not torch.equal(counts_a, counts_c)


def test_smooth_matches_the_functions(tiny_cnn, linear_model) -> None:
    for model, classes, x in [
        (tiny_cnn, 10, torch.rand(1, 8, 8, generator=seeded(0))),
        (linear_model, 2, linear_model.point_at_distance(0.15)),
    ]:
        smoothed = Smooth(model, num_classes=classes, sigma=SIGMA)
        expected = certify(model, x, SIGMA, 100, 3000, 0.001, 1000, generator=seeded(5))
        assert smoothed.certify(x, 100, 3000, 0.001, 1000, generator=seeded(5)) == (
            expected.label, expected.radius)
        assert smoothed.predict(x, 3000, 0.001, 1000, generator=seeded(6)) == predict(
            model, x, SIGMA, 3000, 0.001, 1000, generator=seeded(6))
        assert Smooth.ABSTAIN == ABSTAIN == -1


def test_smooth_refuses_a_model_with_other_class_count(tiny_cnn) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(tiny_cnn, num_classes=3, sigma=SIGMA).certify(torch.rand(1, 8, 8), 10, 10, 0.1, 10)


class WrongShape(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1)[:, :1]  # (B, 1): one logit is no classifier


class FlatOutput(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten()  # (B * C * H * W,)


GOOD = dict(sigma=SIGMA, n0=10, n=10, alpha=0.01, batch_size=10)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.25}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"n": 0}, "n"),
        ({"n0": 0}, "n0"),
        ({"n": 2.5}, "n"),
        ({"batch_size": 0}, "batch_size"),
        ({"x": torch.rand(1, 1, 8, 8)}, "x"),
        ({"x": torch.rand(8, 8)}, "x"),
        ({"x": torch.full((1, 8, 8), float("nan"))}, "x"),
        ({"x": torch.full((1, 8, 8), float("inf"))}, "x"),
        ({"x": torch.zeros(1, 8, 8, dtype=torch.uint8)}, "x"),
        ({"x": [[0.5]]}, "x"),
        ({"model": WrongShape()}, "model"),
        ({"model": FlatOutput()}, "model"),
    ],
)
def test_bad_input_is_refused(tiny_cnn, changes: dict, name: str) -> None:
    arguments = {"model": tiny_cnn, "x": torch.rand(1, 8, 8), **GOOD, **changes}
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        certify(**arguments)
    del arguments["n0"]
    if name != "n0":
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            predict(**arguments)


@pytest.mark.parametrize(("classes", "sigma", "name"), [(1, 0.25, "num_classes"),
                                                        (10, 0.0, "sigma")])
def test_smooth_refuses_bad_construction(tiny_cnn, classes: int, sigma: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Smooth(tiny_cnn, num_classes=classes, sigma=sigma)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_a_cuda_generator(tiny_cnn) -> None:
    model = tiny_cnn.cuda()
    x = torch.rand(1, 8, 8)
    generator = torch.Generator(device="cuda").manual_seed(0)
    cert = certify(model, x, SIGMA, 50, 2000, 0.01, 500, generator=generator)
    again = certify(model, x, SIGMA, 50, 2000, 0.01, 500,
                    generator=torch.Generator(device="cuda").manual_seed(0))
    assert cert == again
    with pytest.raises(ValueError, match="generator"):
        certify(model, x, SIGMA, 50, 2000, 0.01, 500, generator=seeded(0))

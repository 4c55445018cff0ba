"""Sequential certification: stop sampling as soon as the statistics settle the answer.

``certify`` at a fixed n spends n = 100,000 forward passes on every image, although an image whose
top-class probability pA is far from the decision threshold is settled after a few hundred. Here
samples are drawn in rounds and bounds on pA are checked after each round ("look"); whatever look
the data make us stop at, the certificate's pA_lower is a valid (1 - alpha) lower bound there, so
it keeps the guarantee of Cohen et al. (2019, Theorem 1). Upper bounds decide only when to give
up; they never enter a certificate. Two rules make the bounds valid at a data-dependent look
(``rule=``):

- ``"betting"`` (the default): the betting confidence sequence of
  :mod:`certify.confidence_sequence` (Waudby-Smith and Ramdas, JRSS-B 2023, as applied to
  randomized smoothing by Voracek, NeurIPS 2024). Its bounds hold at every sample size at once
  with the whole alpha, so looking costs nothing: it looks after :data:`BETTING_FIRST_LOOK`
  samples and then whenever the sample grew by :data:`BETTING_GROWTH`. Its bets start from the
  n0 selection votes, which are independent of the votes it counts.
- ``"clopper-pearson"``: Clopper-Pearson bounds at a fixed schedule of looks
  n_1 < n_2 < ... < n_J = n, look j spending error alpha_j with sum_j alpha_j = alpha, so by the
  union bound every bound at every look holds at once (the Bonferroni split, as in the adaptive
  sampling of Horvath et al., "Boosting Randomized Smoothing with Variance Reduced Classifiers",
  ICLR 2022). Most of alpha (:data:`FINAL_SHARE`) is kept for the final look, so an image that
  needs the whole budget loses little against a fixed-n run.

Two stopping modes:

- target radius r: stop once pA_lower >= Phi(r / sigma) (certified at r) or once even pA at its
  upper bound pA_upper would not certify r within the budget n (it cannot be);
- adaptive: stop once the radius could grow by at most ``tolerance`` even if pA were at pA_upper
  and the rest of the budget were spent, and whether the image is certified at all (radius 0)
  and at each of ``curve_radii`` is settled as in the target mode; it abstains once pA_upper
  could not lift pA_lower to 1/2 within the budget.

Example:
    >>> cert = certify_sequential(model, x, 0.25, n0=100, n=100_000, alpha=0.001,
    ...                           batch_size=1000, radius=0.5)
    >>> cert.radius >= 0.5, cert.samples          # often settled after a few dozen samples
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.stats import norm

from certify import confidence_sequence
from certify.checks import check_alpha, check_count, check_positive
from certify.guarantee import (
    ABSTAIN,
    Certificate,
    clopper_pearson_lower,
    clopper_pearson_upper,
    radius_from_bound,
)
from certify.sampling import sample_counts

RULES = ("betting", "clopper-pearson")
"""The stopping rules of :func:`certify_sequential`; the first is the default."""

BETTING_FIRST_LOOK = 16
"""Samples before the betting rule's first look."""

BETTING_GROWTH = 1.1
"""The betting rule looks again once the sample grew by this factor (at least one sample more):
an image settled between two looks overshoots by at most 10% of its samples."""

BETTING_FINAL_SHARE = 0.5
"""The share of alpha the betting rule keeps for a Clopper-Pearson bound at the budget n (the
confidence sequence spends the rest): by the union bound both hold at once, and an image that
needs the whole budget gets nearly the bound of a fixed-n run, which a confidence sequence, valid
at every sample size, cannot match at one given size."""

FIRST_LOOK = 128
"""Samples before the first look; the looks then double until the budget."""

FINAL_SHARE = 0.9
"""The share of alpha kept for the final look (the rest is split evenly over the earlier ones).

Images that reach the final look are those whose pA sits near the threshold, where the width of
the bound decides the answer; the earlier looks only settle clear cases, whose margin dwarfs the
width, and the width grows only as sqrt(log(1 / alpha)), so a small share costs them few samples.
"""


@dataclass(frozen=True)
class LookSchedule:
    """Cumulative sample sizes of the looks and the error each one spends (summing to alpha)."""

    sizes: tuple[int, ...]
    alphas: tuple[float, ...]


def look_schedule(n: int, alpha: float, first: int = FIRST_LOOK) -> LookSchedule:
    """Looks at first, 2 first, 4 first, ... and n; the last look spends FINAL_SHARE * alpha, the
    others share the rest equally (one look only: it spends alpha).

    Raises:
        ValueError: if n or first < 1 or alpha is outside (0, 1).
    """
    check_count("n", n)
    check_count("first", first)
    check_alpha(alpha)
    sizes = []
    size = first
    while size < n:
        sizes.append(size)
        size *= 2
    sizes.append(n)
    if len(sizes) == 1:
        return LookSchedule((n,), (alpha,))
    early = (1 - FINAL_SHARE) * alpha / (len(sizes) - 1)
    return LookSchedule(tuple(sizes), (early,) * (len(sizes) - 1) + (FINAL_SHARE * alpha,))


def betting_looks(n: int, first: int = BETTING_FIRST_LOOK,
                  growth: float = BETTING_GROWTH) -> tuple[int, ...]:
    """Cumulative sample sizes at which the betting rule looks: first, then each about ``growth``
    times the last (one more at least), and n.

    Raises:
        ValueError: if n or first < 1 or growth <= 1.
    """
    check_count("n", n)
    check_count("first", first)
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    sizes = []
    size = first
    while size < n:
        sizes.append(size)
        size = max(size + 1, math.ceil(size * growth))
    return (*sizes, n)


@dataclass(frozen=True)
class _Question:
    """What a run must settle before it stops: for each threshold Phi(r / sigma), whether
    pA_lower reaches it or cannot within the budget; in the adaptive mode (``tolerance`` set),
    also the radius, to within ``tolerance`` of the best the budget could give."""

    thresholds: tuple[float, ...]
    sigma: float
    tolerance: float | None

    def settled(self, lower: float, upper: float, best_final: Callable[[float], float]) -> bool:
        """Whether a look with bounds [lower, upper] on pA settles it; ``best_final(upper)`` is
        the final look's lower bound if all votes, the rest of the budget's included, came at
        rate ``upper``: the most the budget can certify (with probability 1 - alpha)."""
        open_thresholds = [threshold for threshold in self.thresholds if threshold > lower]
        if not open_thresholds and self.tolerance is None:
            return True
        best = best_final(upper)
        if any(threshold <= best for threshold in open_thresholds):
            return False
        if self.tolerance is None:
            return True
        best_radius = radius_from_bound(self.sigma, best) if best > 0.5 else 0.0
        now = radius_from_bound(self.sigma, lower) if lower > 0.5 else 0.0
        return best_radius - now <= self.tolerance


def _clopper_pearson_rule(draw: Callable[[int], int], n: int, alpha: float,
                          question: _Question) -> tuple[int, int, float]:
    """Run the Clopper-Pearson looks on votes from ``draw(num)`` (ones among num new votes);
    returns (count, drawn, pA_lower) at the look that stopped."""
    schedule = look_schedule(n, alpha)
    final_alpha = schedule.alphas[-1]
    count = drawn = 0
    for size, look_alpha in zip(schedule.sizes, schedule.alphas):
        count += draw(size - drawn)
        drawn = size
        lower = clopper_pearson_lower(count, drawn, look_alpha)
        upper = clopper_pearson_upper(count, drawn, look_alpha)
        if question.settled(
                lower, upper,
                lambda rate: clopper_pearson_lower(math.floor(rate * n), n, final_alpha)):
            break
    return count, drawn, lower


def _betting_rule(draw: Callable[[int], int], prior: confidence_sequence.BetaPrior, n: int,
                  alpha: float, question: _Question) -> tuple[int, int, float]:
    """Run the betting confidence sequence on votes from ``draw(num)``; returns
    (count, drawn, pA_lower) with pA_lower the running maximum of its lower bounds (and, at the
    budget, of the Clopper-Pearson bound)."""
    sequence_alpha, final_alpha = (1 - BETTING_FINAL_SHARE) * alpha, BETTING_FINAL_SHARE * alpha

    def final_lower(count: int) -> float:
        return max(confidence_sequence.lower_bound(count, n, sequence_alpha, prior),
                   clopper_pearson_lower(count, n, final_alpha))

    lower, upper = 0.0, 1.0
    count = drawn = 0
    for size in betting_looks(n):
        count += draw(size - drawn)
        drawn = size
        bound = final_lower(count) if drawn == n else confidence_sequence.lower_bound(
            count, drawn, sequence_alpha, prior)
        lower = max(lower, bound)
        upper = min(upper, confidence_sequence.upper_bound(count, drawn, sequence_alpha, prior))
        if question.settled(lower, upper, lambda rate: final_lower(math.floor(rate * n))):
            break
    return count, drawn, lower


def certify_sequential(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    *,
    radius: float | None = None,
    tolerance: float = 0.05,
    num_classes: int | None = None,
    rule: str | None = None,
    curve_radii: Sequence[float] = (),
) -> Certificate:
    """Certify g at x with at most n estimation samples, stopping early when the answer is settled.

    Guarantee: with probability at least 1 - alpha over the noise, if the returned label is not
    ``ABSTAIN`` then g(x + delta) equals it for every ||delta||_2 < radius, as for
    :func:`certify.certify`: pA_lower is a (1 - alpha) lower bound at the look that stopped,
    whatever the rule (see the module's text).

    Args:
        model, x, sigma, n0, alpha, batch_size, generator, num_classes: as :func:`certify.certify`.
        n: the budget of estimation samples, >= 1.
        radius: the target radius r > 0 (answer "is g certified at r?"), or None for the adaptive
            rule that stops once the radius can grow by at most ``tolerance``.
        tolerance: the adaptive rule's L2 tolerance, > 0.
        rule: ``"betting"`` (the confidence sequence) or ``"clopper-pearson"`` (Bonferroni-split
            looks); None picks ``RULES[0]``, the default.
        curve_radii: radii (>= 0) at which the adaptive mode also settles, as the target mode
            would, whether the image is certified: those of the curve to be reported, so that
            the tolerance does not move it. Radius 0 (abstain or not) is always settled.

    Returns:
        A :class:`certify.Certificate` whose ``samples`` is the number of estimation samples
        drawn; its radius is sigma * PhiInv(pA_lower) at the look that stopped, which may be
        below or above the target.

    Raises:
        ValueError: if an argument is out of range.
    """
    check_count("n0", n0)
    check_count("n", n)
    check_alpha(alpha)
    check_positive("tolerance", tolerance)
    if radius is not None:
        check_positive("radius", radius)
    rule = RULES[0] if rule is None else rule
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not all(math.isfinite(r) and r >= 0 for r in curve_radii):
        raise ValueError(f"curve_radii must hold finite radii >= 0, got {tuple(curve_radii)}")
    selection = sample_counts(model, x, sigma, n0, batch_size, generator, num_classes)
    candidate = int(selection.argmax())

    def draw(num: int) -> int:
        votes = sample_counts(model, x, sigma, num, batch_size, generator, len(selection))
        return int(votes[candidate])

    if radius is not None:
        question = _Question((float(norm.cdf(radius / sigma)),), sigma, None)
    else:
        radii = sorted({0.0, *curve_radii})
        question = _Question(tuple(float(norm.cdf(r / sigma)) for r in radii), sigma, tolerance)
    if rule == "clopper-pearson":
        count, drawn, pA_lower = _clopper_pearson_rule(draw, n, alpha, question)
    else:
        prior = confidence_sequence.prior_from_votes(int(selection[candidate]), n0)
        count, drawn, pA_lower = _betting_rule(draw, prior, n, alpha, question)
    if pA_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, pA_lower, count, drawn)
    return Certificate(candidate, radius_from_bound(sigma, pA_lower), pA_lower, count, drawn)

"""Sequential certification: stop sampling as soon as the statistics settle the answer.

``certify`` at a fixed n spends n = 100,000 forward passes on every image, although an image whose
top-class probability pA is far from the decision threshold is settled after a few hundred. Here
samples are drawn in rounds and the Clopper-Pearson bounds are checked at a fixed schedule of looks
n_1 < n_2 < ... < n_J = n. Look j spends error alpha_j with sum_j alpha_j = alpha, so by the union
bound, with probability at least 1 - alpha, every lower bound at every look holds at once, and the
certificate reported at whatever look the data make us stop at keeps the guarantee of Cohen et al.
(2019, Theorem 1). This is the Bonferroni-split Clopper-Pearson sequence, the simplest
anytime-valid choice: a union bound over a fixed schedule of looks, as in the adaptive sampling of
Horvath et al. ("Boosting Randomized Smoothing with Variance Reduced Classifiers", ICLR 2022)
for a predetermined radius. Confidence sequences (Voracek, "Treatment of Statistical Estimation
Problems in Randomized Smoothing for Adversarial Robustness", 2024) stop sooner near the
threshold at the price of a longer derivation. Most of alpha (:data:`FINAL_SHARE`) is kept for
the final look, so an image that needs the whole budget loses little against a fixed-n run.
Upper bounds decide only when to give up; they never enter a certificate.

Two stopping rules:

- target radius r: stop once pA_lower >= Phi(r / sigma) (certified at r) or once the upper bound
  pA_upper < Phi(r / sigma) (it cannot be);
- adaptive: stop once the radius could grow by at most ``tolerance`` even if pA were at its upper
  bound and the rest of the budget were spent, or abstain once pA_upper < 1/2.

Example:
    >>> cert = certify_sequential(model, x, 0.25, n0=100, n=100_000, alpha=0.001,
    ...                           batch_size=1000, radius=0.5)
    >>> cert.radius >= 0.5, cert.samples          # often settled after a few hundred samples
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import norm

from certify.checks import check_alpha, check_count, check_positive
from certify.guarantee import (
    Certificate,
    certificate_from_votes,
    clopper_pearson_lower,
    clopper_pearson_upper,
    radius_from_bound,
)
from certify.sampling import sample_counts

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


def _settled(count: int, drawn: int, look_alpha: float, final_alpha: float, n: int,
             sigma: float, radius: float | None, tolerance: float) -> bool:
    lower = clopper_pearson_lower(count, drawn, look_alpha)
    upper = clopper_pearson_upper(count, drawn, look_alpha)
    if radius is not None:
        threshold = float(norm.cdf(radius / sigma))
        return lower >= threshold or upper < threshold
    if upper < 0.5:
        return True
    best_final = clopper_pearson_lower(math.floor(upper * n), n, final_alpha)
    best_radius = radius_from_bound(sigma, best_final) if best_final > 0.5 else 0.0
    now = radius_from_bound(sigma, lower) if lower > 0.5 else 0.0
    return best_radius - now <= tolerance


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
) -> Certificate:
    """Certify g at x with at most n estimation samples, stopping early when the answer is settled.

    Guarantee: with probability at least 1 - alpha over the noise, if the returned label is not
    ``ABSTAIN`` then g(x + delta) equals it for every ||delta||_2 < radius, as for
    :func:`certify.certify`; the bounds of all looks hold simultaneously (see the module's text).

    Args:
        model, x, sigma, n0, alpha, batch_size, generator, num_classes: as :func:`certify.certify`.
        n: the budget of estimation samples, >= 1.
        radius: the target radius r > 0 (answer "is g certified at r?"), or None for the adaptive
            rule that stops once the radius can grow by at most ``tolerance``.
        tolerance: the adaptive rule's L2 tolerance, > 0.

    Returns:
        A :class:`certify.Certificate` whose ``samples`` is the number of estimation samples
        drawn; its radius is sigma * PhiInv(pA_lower) from the look that stopped, which may be
        below or above the target.

    Raises:
        ValueError: if an argument is out of range.
    """
    check_count("n0", n0)
    check_positive("tolerance", tolerance)
    if radius is not None:
        check_positive("radius", radius)
    schedule = look_schedule(n, alpha)
    selection = sample_counts(model, x, sigma, n0, batch_size, generator, num_classes)
    candidate = int(selection.argmax())
    count = drawn = 0
    for size, look_alpha in zip(schedule.sizes, schedule.alphas):
        votes = sample_counts(model, x, sigma, size - drawn, batch_size, generator, len(selection))
        count += int(votes[candidate])
        drawn = size
        if _settled(count, drawn, look_alpha, schedule.alphas[-1], n, sigma, radius, tolerance):
            break
    return certificate_from_votes(candidate, count, drawn, sigma, look_alpha)

"""Randomized smoothing: Monte Carlo prediction and certification of the smoothed classifier.

Given a base classifier f that maps pixels to logits, the smoothed classifier is

    g(x) = argmax_c P(f(x + e) = c),   e ~ N(0, sigma^2 I),

and if the top class has probability pA >= pA_lower > 1/2 under the noise, g is constant within
the L2 ball of radius sigma * PhiInv(pA_lower) around x (Cohen, Rosenfeld and Kolter, "Certified
Adversarial Robustness via Randomized Smoothing", ICML 2019, Theorem 1 with pB = 1 - pA).

Example:
    >>> label = predict(model, x, sigma=0.25, n=100_000, alpha=0.001, batch_size=1000)
    >>> cert = certify(model, x, sigma=0.25, n0=100, n=100_000, alpha=0.001, batch_size=1000)
    >>> cert.label, cert.radius
"""

from __future__ import annotations

import torch

from certify.checks import check_alpha, check_count, check_positive
from certify.guarantee import (
    ABSTAIN,
    Certificate,
    certificate_from_votes,
    two_sided_binomial_pvalue,
)
from certify.sampling import sample_counts
from certify.sequential import certify_sequential

__all__ = ["ABSTAIN", "Certificate", "Smooth", "certify", "predict"]


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n: int,
    alpha: float,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    *,
    num_classes: int | None = None,
) -> int:
    """Monte Carlo prediction of the smoothed classifier g at x (Cohen et al. 2019, PREDICT).

    Guarantee: with probability at least 1 - alpha over the noise, the returned label is either
    ``ABSTAIN`` or g(x); the answer is wrong about g(x) with probability at most alpha.

    Args:
        model: base classifier mapping (B, C, H, W) pixels in [0, 1] to (B, K) logits.
        x: one image (C, H, W).
        sigma: noise standard deviation, > 0.
        n: number of noise samples, >= 1.
        alpha: error probability in (0, 1).
        batch_size: samples per forward pass, >= 1.
        generator: optional torch.Generator on the model's device, for reproducible noise.
        num_classes: if given, the number of logits the model must return.

    Returns:
        The predicted class, or ``ABSTAIN`` (-1) when the two-sided binomial test between the two
        most frequent classes does not reject a tie at level alpha.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> predict(model, x, sigma=0.25, n=100_000, alpha=0.001, batch_size=1000)
        3
    """
    check_alpha(alpha)
    check_count("n", n)
    counts = sample_counts(model, x, sigma, n, batch_size, generator, num_classes)
    top_counts, top_labels = counts.topk(2)
    first, second = int(top_counts[0]), int(top_counts[1])
    if two_sided_binomial_pvalue(first, first + second) > alpha:
        return ABSTAIN
    return int(top_labels[0])


def certify(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    *,
    num_classes: int | None = None,
    radius: float | None = None,
    adaptive: bool = False,
    tolerance: float = 0.05,
    rule: str | None = None,
    curve_radii: tuple[float, ...] = (),
) -> Certificate:
    """Certify the smoothed classifier g at x in L2 (Cohen et al. 2019, CERTIFY).

    ``n0`` samples select the top class cA; ``n`` fresh samples give a one-sided (1 - alpha)
    Clopper-Pearson lower bound pA_lower on P(f(x + e) = cA).

    Guarantee: with probability at least 1 - alpha over the noise, if the returned label is not
    ``ABSTAIN`` then g(x + delta) equals it for every ||delta||_2 < radius.

    Args:
        model: base classifier mapping (B, C, H, W) pixels in [0, 1] to (B, K) logits.
        x: one image (C, H, W).
        sigma: noise standard deviation, > 0.
        n0: selection samples, >= 1.
        n: estimation samples, >= 1.
        alpha: error probability in (0, 1).
        batch_size: samples per forward pass, >= 1.
        generator: optional torch.Generator on the model's device, for reproducible noise.
        num_classes: if given, the number of logits the model must return.
        radius: if given (> 0), answer "is g certified at this radius?" with at most n samples,
            stopping as soon as anytime-valid bounds settle it (:mod:`certify.sequential`).
        adaptive: stop once the radius could grow by at most ``tolerance`` within the budget n
            (:mod:`certify.sequential`); both keep the guarantee below.
        tolerance: the adaptive rule's L2 tolerance, > 0.
        rule: the sequential modes' stopping rule, ``"betting"`` or ``"clopper-pearson"``
            (None: the default of :mod:`certify.sequential`); unused at a fixed n.
        curve_radii: radii whose certification the adaptive mode settles exactly, as the target
            mode would (:mod:`certify.sequential`).

    Returns:
        A :class:`Certificate` (label, radius, pA_lower, count, samples); label is ``ABSTAIN``
        with radius 0.0 when pA_lower < 1/2.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> cert = certify(model, x, sigma=0.25, n0=100, n=100_000, alpha=0.001)
        >>> cert.label, cert.radius
        (3, 0.61)
    """
    if radius is not None or adaptive:
        return certify_sequential(model, x, sigma, n0, n, alpha, batch_size, generator,
                                  radius=radius, tolerance=tolerance, num_classes=num_classes,
                                  rule=rule, curve_radii=curve_radii)
    check_alpha(alpha)
    check_count("n0", n0)
    check_count("n", n)
    selection = sample_counts(model, x, sigma, n0, batch_size, generator, num_classes)
    candidate = int(selection.argmax())
    estimation = sample_counts(model, x, sigma, n, batch_size, generator, len(selection))
    return certificate_from_votes(candidate, int(estimation[candidate]), n, sigma, alpha)


class Smooth:
    """The smoothed classifier g with the interface of Cohen et al.'s ``core.Smooth``.

    Example:
        >>> smoothed = Smooth(model, num_classes=10, sigma=0.25)
        >>> prediction, radius = smoothed.certify(x, n0=100, n=100_000, alpha=0.001,
        ...                                       batch_size=1000)
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float) -> None:
        """Args:
            base_classifier: maps (B, C, H, W) pixels in [0, 1] to (B, num_classes) logits.
            num_classes: number of classes K >= 2.
            sigma: noise standard deviation, > 0.

        Raises:
            ValueError: if num_classes < 2 or sigma <= 0.
        """
        check_positive("sigma", sigma)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> tuple[int, float]:
        """Certify g at x; same guarantee and arguments as :func:`certify`.

        Returns:
            (prediction, radius): the class or ``ABSTAIN``, and the certified L2 radius.
        """
        cert = certify(
            self.base_classifier, x, self.sigma, n0, n, alpha, batch_size, generator,
            num_classes=self.num_classes,
        )
        return cert.label, cert.radius

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """Predict g(x) or abstain; same guarantee and arguments as :func:`predict`."""
        return predict(
            self.base_classifier, x, self.sigma, n, alpha, batch_size, generator,
            num_classes=self.num_classes,
        )

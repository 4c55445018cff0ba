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

import math
from typing import NamedTuple

import torch
from scipy.stats import norm

from certify.bounds import clopper_pearson_lower, two_sided_binomial_pvalue

ABSTAIN = -1
"""The label returned when the smoothed classifier declines to answer."""


class Certificate(NamedTuple):
    """The outcome of :func:`certify` for one image.

    Attributes:
        label: the certified class, or ``ABSTAIN``.
        radius: the certified L2 radius (0.0 when abstaining).
        pA_lower: a one-sided (1 - alpha) lower bound on the top class's probability
            (Clopper-Pearson, or a confidence sequence's in :mod:`certify.sequential`).
        count: votes for the selected class among the ``samples`` estimation draws.
        samples: noise samples drawn for the estimation (n; selection draws not counted).
    """

    label: int
    radius: float
    pA_lower: float
    count: int
    samples: int


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model that has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_count(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless alpha is in the open interval (0, 1)."""
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def check_image(x: torch.Tensor) -> None:
    """Raise ValueError unless x is one finite floating-point image of shape (C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (C, H, W), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must be one image of shape (C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must hold floating-point pixels in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, but it holds NaN or inf")


def sample_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: float,
    num: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Count the base classifier's predictions on ``num`` Gaussian perturbations of x.

    Noise is drawn in batches of at most ``batch_size`` on the model's device (the last batch is
    the remainder, so exactly ``num`` samples are drawn) and never all at once.

    Args:
        model: base classifier mapping (B, C, H, W) pixels to (B, K) logits.
        x: one image (C, H, W).
        sigma: noise standard deviation, > 0.
        num: number of noise samples, >= 1.
        batch_size: samples per forward pass, >= 1.
        generator: optional torch.Generator on the model's device, for reproducible noise.
        num_classes: if given, the number of logits the model must return.

    Returns:
        An int64 CPU tensor of shape (K,) with the vote count of every class; it sums to num.

    Raises:
        ValueError: if an argument is out of range or the model's output is not (B, K).
    """
    check_image(x)
    check_positive("sigma", sigma)
    check_count("num", num)
    check_count("batch_size", batch_size)
    device = model_device(model)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator must be on the model's device ({device}), got one on {generator.device}"
        )
    x = x.to(device=device, dtype=_model_dtype(model))
    # Votes stay on the device and are counted once at the end: a bincount per batch would wait
    # for the GPU at every batch.
    votes = torch.empty(num, dtype=torch.long, device=device)  # (num,)
    with torch.inference_mode():
        drawn = 0
        while drawn < num:
            this_batch = min(batch_size, num - drawn)
            noise = torch.randn(
                (this_batch, *x.shape), generator=generator, device=device, dtype=x.dtype
            )  # (B, C, H, W)
            logits = model(noise.mul_(sigma).add_(x))  # (B, K)
            if logits.dim() != 2 or logits.shape[0] != this_batch or logits.shape[1] < 2:
                raise ValueError(
                    f"model must map a batch (B, C, H, W) to logits (B, K) with K >= 2, "
                    f"got output shape {tuple(logits.shape)} for B={this_batch}"
                )
            if num_classes is not None and logits.shape[1] != num_classes:
                raise ValueError(
                    f"num_classes is {num_classes} but the model returns {logits.shape[1]} logits"
                )
            votes[drawn : drawn + this_batch] = logits.argmax(dim=1)
            drawn += this_batch
        counts = torch.bincount(votes, minlength=logits.shape[1])  # (K,)
    return counts.cpu()


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


def radius_from_bound(sigma: float, pA_lower: float) -> float:
    """Certified L2 radius sigma * PhiInv(pA_lower) (Cohen et al. 2019, Theorem 1)."""
    return float(sigma * norm.ppf(pA_lower))


def certificate_from_votes(
    candidate: int, count: int, samples: int, sigma: float, alpha: float
) -> Certificate:
    """The certificate for ``candidate`` from ``count`` of its votes among ``samples`` fresh draws.

    pA_lower is the one-sided (1 - alpha) Clopper-Pearson bound; the radius is
    sigma * PhiInv(pA_lower), or the answer is ``ABSTAIN`` when pA_lower < 1/2 (Cohen et al. 2019).
    """
    pA_lower = clopper_pearson_lower(count, samples, alpha)
    if pA_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, pA_lower, count, samples)
    return Certificate(candidate, radius_from_bound(sigma, pA_lower), pA_lower, count, samples)


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
        from certify.sequential import certify_sequential

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

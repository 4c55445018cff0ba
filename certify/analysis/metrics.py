"""Certified accuracy, average certified radius and their envelope over noise levels.

Example:
    >>> results = read_results("results/digits_sigma0.25.tsv")
    >>> certified_accuracy(results, [0.0, 0.25, 0.5])
    array([0.93, 0.81, 0.52])
    >>> summarize(results)["average_certified_radius"]
    0.41
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from certify.analysis.reader import CertifiedResults
from certify.checks import check_non_negative
from certify.guarantee import ABSTAIN

SUMMARY_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The radii of Cohen et al.'s CIFAR-10 table, used by :func:`summarize` by default."""


def check_radii(radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """The radii as float64; ValueError unless a non-empty sequence of finite numbers >= 0."""
    values = np.asarray(radii, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or not (np.isfinite(values) & (values >= 0)).all():
        raise ValueError(f"radii must be a non-empty sequence of finite numbers >= 0, got {radii}")
    return values


def certified_accuracy(
    results: CertifiedResults, radii: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The fraction of images classified correctly with certified radius >= r, for each r in radii.

    This is the approximate certified test accuracy of Cohen et al. (2019, Section 4): each counted
    image is, with probability at least 1 - alpha, classified correctly by the smoothed classifier
    everywhere within L2 distance r. Abstentions count as errors.

    Args:
        results: certification results, e.g. from :func:`read_results`.
        radii: L2 radii, each finite and >= 0.

    Returns:
        A float64 array of shape (len(radii),) with values in [0, 1], non-increasing in the radius.

    Raises:
        ValueError: if radii is empty or holds a negative or non-finite value.

    Example:
        >>> certified_accuracy(results, [0.0, 0.5])
        array([0.748, 0.428])
    """
    values = check_radii(radii)
    correct = results.correct.astype(bool)[None, :]  # (1, N)
    certified = correct & (results.radius[None, :] >= values[:, None])  # (R, N)
    return certified.mean(axis=1)


def certified_by_image(results: CertifiedResults, radius: float) -> dict[int, bool]:
    """Per image index, whether it is counted in the certified accuracy at ``radius``: classified
    correctly with certified radius >= ``radius`` (:func:`certified_accuracy`'s rule).

    Raises:
        ValueError: if radius is not a finite number >= 0.
    """
    check_non_negative("radius", radius)
    certified = results.correct.astype(bool) & (results.radius >= radius)  # (N,)
    return dict(zip(results.idx.tolist(), certified.tolist()))


def average_certified_radius(results: CertifiedResults) -> float:
    """The mean over all images of the certified radius, counting wrong or abstained images as 0.

    This is the ACR of Zhai et al., "MACER: Attack-free and Scalable Robust Training via Maximizing
    Certified Radius" (ICLR 2020), equal to the area under the certified-accuracy curve.

    Example:
        >>> average_certified_radius(results)
        0.41
    """
    return float(np.mean(results.radius * results.correct))


def certified_accuracy_curve(results: CertifiedResults) -> tuple[np.ndarray, np.ndarray]:
    """The exact certified-accuracy step curve: breakpoints and the accuracy at each.

    Certified accuracy is constant on every interval (r_k, r_k+1] between consecutive radii of
    correct images and drops just after each, so drawing these points with matplotlib's
    ``drawstyle="steps-pre"`` draws the curve exactly. The last point, 5% beyond the largest
    radius, has accuracy 0.

    Returns:
        (radii, accuracies), float64 arrays of equal length starting at radius 0.

    Example:
        >>> radii, accuracies = certified_accuracy_curve(results)
        >>> ax.plot(radii, accuracies, drawstyle="steps-pre")
    """
    return _step_points([results])


def envelope(
    results_list: Iterable[CertifiedResults], radii: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The pointwise maximum over several results of their certified accuracy at each radius.

    Papers plot this upper envelope over noise levels sigma (Cohen et al. 2019, Figure 7). It is
    not the certified accuracy of any one classifier, since sigma is chosen per radius after
    seeing the test results.

    Raises:
        ValueError: if results_list is empty or radii are invalid.

    Example:
        >>> envelope([results_sigma_025, results_sigma_050], [0.0, 0.5, 1.0])
        array([0.81, 0.62, 0.38])
    """
    curves = [certified_accuracy(results, radii) for results in results_list]
    if not curves:
        raise ValueError("results_list must hold at least one CertifiedResults, got none")
    return np.max(curves, axis=0)


def envelope_curve(results_list: Iterable[CertifiedResults]) -> tuple[np.ndarray, np.ndarray]:
    """The exact step curve of :func:`envelope`, in the form of :func:`certified_accuracy_curve`."""
    return _step_points(list(results_list))


def _step_points(results_list: list[CertifiedResults]) -> tuple[np.ndarray, np.ndarray]:
    if not results_list:
        raise ValueError("results_list must hold at least one CertifiedResults, got none")
    correct_radii = [results.radius[results.correct == 1] for results in results_list]
    breakpoints = np.unique(np.concatenate([np.zeros(1), *correct_radii]))  # sorted, from 0
    end = breakpoints[-1] + 0.05 * max(breakpoints[-1], 1e-3)
    radii = np.append(breakpoints, end)
    return radii, envelope(results_list, radii)


def summarize(results: CertifiedResults, radii: Sequence[float] = SUMMARY_RADII) -> dict:
    """The figures a certification run reports, as a plain dict.

    Returns:
        ``{"num_images": int, "accuracy": float, "abstain_rate": float,
        "certified_accuracy": {radius: float}, "average_certified_radius": float,
        "mean_time_s": float}``; accuracy is the smoothed classifier's clean accuracy, that is
        the certified accuracy at radius 0.

    Example:
        >>> summarize(read_results("cifar10_resnet110_noise0.25_sigma0.25.tsv"))["abstain_rate"]
        0.086
    """
    accuracies = certified_accuracy(results, radii)
    return {
        "num_images": len(results),
        "accuracy": float(np.mean(results.correct)),
        "abstain_rate": float(np.mean(results.predict == ABSTAIN)),
        "certified_accuracy": {float(r): float(a) for r, a in zip(radii, accuracies)},
        "average_certified_radius": average_certified_radius(results),
        "mean_time_s": float(np.mean(results.time)),
    }

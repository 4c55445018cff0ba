"""The exact McNemar test: do two attacks, or two models, on the same images differ in accuracy?

Two attacks on the same n images give paired outcomes, and so do two models certified on them.
Only the discordant images tell them apart: b images survive attack A but not B, c survive B but
not A. Under the null hypothesis that both attacks leave the same accuracy, each discordant image
is equally likely to fall either way, so b ~ Binomial(b + c, 1/2) (McNemar, Psychometrika 1947;
the exact form in Fagerland, Lydersen and Laake, BMC Med. Res. Methodol. 2013). Unpaired intervals
of the two accuracies overlap far more often than this test fails to separate them.

Example:
    >>> mcnemar_exact([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0])
    PairedTest(only_a=6, only_b=0, p_value=0.03125)
    >>> paired_certified(read_results("rush.tsv"), read_results("baseline.tsv"), radius=0.5)
    PairedTest(only_a=15, only_b=7, p_value=0.134)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from certify.analysis.metrics import certified_by_image
from certify.analysis.reader import CertifiedResults


class PairedTest(NamedTuple):
    """Discordant counts and the two-sided exact p-value of McNemar's test."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(correct_a: Sequence[int | bool], correct_b: Sequence[int | bool]) -> PairedTest:
    """The exact two-sided McNemar test of two paired sequences of outcomes (1 = correct).

    Args:
        correct_a: per image, whether it is classified correctly after attack A (0/1 or bool).
        correct_b: the same images, in the same order, after attack B.

    Returns:
        ``only_a`` (correct under A only), ``only_b`` (under B only) and the p-value
        ``P(|X - m/2| >= |only_a - m/2|)`` for X ~ Binomial(m, 1/2), m = only_a + only_b
        (1.0 when there is no discordant image), from statsmodels' ``mcnemar(exact=True)``.

    Raises:
        ValueError: if the sequences differ in length or hold values other than 0 and 1.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(
            f"correct_a and correct_b must pair the same images, got {len(correct_a)} and "
            f"{len(correct_b)} outcomes"
        )
    for name, outcomes in (("correct_a", correct_a), ("correct_b", correct_b)):
        if any(value not in (0, 1) for value in outcomes):
            raise ValueError(f"{name} must hold 0 or 1 per image")
    # statsmodels takes a second to import: only callers of this test pay it
    from statsmodels.stats.contingency_tables import mcnemar

    pairs = list(zip(correct_a, correct_b))
    only_a = sum(1 for a, b in pairs if a and not b)
    only_b = sum(1 for a, b in pairs if b and not a)
    both = sum(1 for a, b in pairs if a and b)
    table = [[both, only_a], [only_b, len(pairs) - both - only_a - only_b]]
    return PairedTest(only_a, only_b, float(mcnemar(table, exact=True).pvalue))


def same_images(results_a: CertifiedResults, results_b: CertifiedResults) -> bool:
    """Whether two results files hold rows for exactly the same image indices."""
    return set(results_a.idx.tolist()) == set(results_b.idx.tolist())


def paired_certified(results_a: CertifiedResults, results_b: CertifiedResults,
                     radius: float) -> PairedTest:
    """The exact McNemar test of two results files' certified accuracy at one radius.

    An image counts for a file when it is certified correctly at ``radius``: predicted right with
    certified radius >= ``radius`` (Cohen et al. 2019's certified accuracy, abstentions wrong).
    Images are paired by their index, so the files may list them in any order.

    Args:
        results_a: certification results of model A.
        results_b: those of model B, on the same images (the same set of idx).
        radius: the L2 radius, finite and >= 0.

    Returns:
        ``only_a`` (images certified at ``radius`` by A only), ``only_b`` and the two-sided exact
        p-value, as :func:`mcnemar_exact`.

    Raises:
        ValueError: if radius is negative or not finite, or the files hold different images.
    """
    if not same_images(results_a, results_b):
        unpaired = sorted(set(results_a.idx.tolist()) ^ set(results_b.idx.tolist()))
        raise ValueError(f"results_a and results_b must hold the same images; {len(unpaired)} "
                         f"idx are in one only, e.g. {unpaired[:5]}")
    certified_a = certified_by_image(results_a, radius)
    certified_b = certified_by_image(results_b, radius)
    indices = sorted(certified_a)
    return mcnemar_exact([int(certified_a[idx]) for idx in indices],
                         [int(certified_b[idx]) for idx in indices])

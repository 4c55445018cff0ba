"""Confidence intervals for the accuracies that tables report.

An accuracy measured on n test images is a binomial proportion: k of n correct. The exact
two-sided Clopper-Pearson interval (Clopper and Pearson, Biometrika 1934) covers the accuracy on
the whole distribution with probability at least ``confidence`` for every true value, so two
rows of a table whose intervals overlap are not told apart by the sample.

Example:
    >>> accuracy_interval(389, 500)
    (0.7389..., 0.8136...)
"""

from __future__ import annotations

import numbers

from certify.guarantee import clopper_pearson_lower, clopper_pearson_upper


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact two-sided Clopper-Pearson interval of an accuracy ``correct / total``.

    With probability at least ``confidence`` over the draw of ``correct ~ Binomial(total, p)``,
    ``low <= p <= high``: each end is the one-sided Clopper-Pearson bound at level
    (1 - confidence) / 2. Closed forms: ``correct == 0`` gives low = 0 and
    high = 1 - ((1 - confidence) / 2) ** (1 / total); ``correct == total`` mirrors it.

    Args:
        correct: images classified correctly, 0 <= correct <= total.
        total: images evaluated, >= 1.
        confidence: coverage probability in (0, 1); 0.95 by default.

    Returns:
        (low, high) with 0 <= low <= correct / total <= high <= 1.

    Raises:
        ValueError: if ``correct``, ``total`` or ``confidence`` is out of range or not a number
            of the right kind.

    Example:
        >>> accuracy_interval(0, 360)
        (0.0, 0.0101...)
    """
    for name, value in (("correct", correct), ("total", total)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be in [0, total={total}], got {correct}")
    if not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    tail = (1.0 - float(confidence)) / 2
    correct, total = int(correct), int(total)
    return (clopper_pearson_lower(correct, total, tail),
            clopper_pearson_upper(correct, total, tail))

"""Reading Cohen-format certification results files into columns, strictly.

A results file holds one tab-separated row per test image with the columns of Cohen et al.'s
certify.py first, ``idx label predict radius correct time``, and possibly more after them
(Cohen, Rosenfeld and Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019; github.com/locuslab/smoothing). ``predict`` is -1 (``ABSTAIN``) when the smoothed
classifier abstains, ``radius`` is then 0, and ``time`` is seconds either as a float or as
``H:MM:SS.ffffff``. Rows that contradict each other are refused, since they would misstate
certified accuracy.

Example:
    >>> results = read_results("results/digits_sigma0.25.tsv")
    >>> len(results), results.radius[:2]
    (360, array([0.61, 0.  ]))
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from certify.guarantee import ABSTAIN
from certify.results import read_table, settings_path

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
"""The leading columns of a results file, in the order Cohen et al.'s certify.py writes them."""

_TIMEDELTA = re.compile(r"(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d*)?)")
_SIGMA_IN_NAME = re.compile(r"sigma[_=-]?(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class CertifiedResults:
    """The rows of one results file as columns, one entry per certified image.

    Attributes:
        idx: the image's index in its data set.
        label: the true class.
        predict: the smoothed classifier's class, or ``ABSTAIN`` (-1).
        radius: the certified L2 radius (0 when abstaining).
        correct: 1 if ``predict == label``, else 0.
        time: seconds spent certifying the image.
        extra: any further columns, by name, as the strings written in the file.

    Raises:
        ValueError: if the columns differ in length or are empty, or a row contradicts itself:
            correct not equal to (predict == label), a negative, NaN or infinite radius, an
            abstention with a non-zero radius, or an idx that repeats.

    Example:
        >>> CertifiedResults(idx=[0, 1], label=[3, 7], predict=[3, -1], radius=[0.4, 0.0],
        ...                  correct=[1, 0], time=[1.2, 1.3])
    """

    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    radius: np.ndarray
    correct: np.ndarray
    time: np.ndarray
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, dtype in zip(COLUMNS, (np.int64,) * 3 + (np.float64, np.int64, np.float64)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        lengths = {name: len(getattr(self, name)) for name in COLUMNS}
        lengths.update({name: len(values) for name, values in self.extra.items()})
        if len(set(lengths.values())) != 1:
            raise ValueError(f"results columns must have equal lengths, got {lengths}")
        if len(self.idx) == 0:
            raise ValueError("results must hold at least one row, got none")
        _check_consistent(self)

    def __len__(self) -> int:
        return len(self.idx)


def _check_consistent(results: CertifiedResults) -> None:
    """Reject rows whose values contradict each other (they would misstate certified accuracy)."""
    problems = (
        (~np.isin(results.correct, (0, 1)), "correct must be 0 or 1"),
        (results.correct != (results.predict == results.label), "correct must be predict == label"),
        (~(results.radius >= 0) | np.isinf(results.radius), "radius must be finite and >= 0"),
        ((results.predict == ABSTAIN) & (results.radius != 0), "an abstention must have radius 0"),
        ((results.predict < ABSTAIN) | (results.label < 0), "label must be >= 0 and predict >= -1"),
    )
    for bad_rows, message in problems:
        if bad_rows.any():
            first = int(np.flatnonzero(bad_rows)[0])
            raise ValueError(f"{message}, but the row with idx {results.idx[first]} breaks this")
    unique, counts = np.unique(results.idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"each idx must appear once, but idx {unique[counts > 1][0]} repeats")


def parse_seconds(text: str) -> float:
    """Seconds from a float (``15.4``) or a timedelta string (``0:00:15.4``, ``1 day, 0:00:01``).

    Raises:
        ValueError: if ``text`` is neither, or is negative or not finite.
    """
    match = _TIMEDELTA.fullmatch(text)
    if match:
        days, hours, minutes, seconds = match.groups()
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    seconds = float(text)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"time must be finite and >= 0, got {text!r}")
    return seconds


def read_results(path: str | os.PathLike) -> CertifiedResults:
    """Read a Cohen-format results file (tab-separated, Cohen et al.'s six columns first).

    Files written by Cohen et al.'s certify.py and by our ``certify`` command read unchanged;
    columns after the six leading ones are kept as strings in ``extra``. Blank lines are skipped.

    Args:
        path: the results file.

    Returns:
        The file's rows as :class:`CertifiedResults`.

    Raises:
        ValueError: one line naming the file and the problem, if the file is missing, empty or not
            tab-separated, lacks a leading column, has a row with the wrong number of fields or an
            unparsable value, or holds contradictory rows (see :class:`CertifiedResults`).

    Example:
        >>> results = read_results("cifar10_resnet110_noise0.25_sigma0.25.tsv")
        >>> len(results), results.radius[0]
        (500, 0.378)
    """
    header, rows = read_table(path)
    try:
        return _parse_rows(header, rows)
    except ValueError as error:
        raise ValueError(f"results file {os.fspath(path)}: {error}") from error


def _parse_rows(header: list[str], rows: list[tuple[int, list[str]]]) -> CertifiedResults:
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise ValueError(
            f"the header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}"
        )
    if not rows:
        raise ValueError("the file has a header but no rows")
    columns = {name: [fields[position] for _, fields in rows]
               for position, name in enumerate(header)}
    line_numbers = [number for number, _ in rows]
    parsed: dict[str, Any] = {
        name: [_parse_value(name, text, line) for text, line in zip(columns[name], line_numbers)]
        for name in COLUMNS
    }
    extra = {name: tuple(values) for name, values in columns.items() if name not in COLUMNS}
    return CertifiedResults(**parsed, extra=extra)


def _parse_value(column: str, text: str, line_number: int) -> float | int:
    try:
        if column == "time":
            return parse_seconds(text)
        if column == "radius":
            return float(text)
        return int(text)
    except ValueError:
        raise ValueError(f"line {line_number}, column {column}: cannot parse {text!r}") from None


def sigma_of(path: str | os.PathLike) -> float | None:
    """The noise level sigma a results file was certified at, or None if nothing records it.

    The ``sigma`` of the settings file our ``certify`` writes beside its results
    (``<file>.run.json``) comes first; otherwise the last ``sigma<s>``, ``sigma_<s>`` or
    ``sigma-<s>`` in the file name (the last, since names such as
    ``digits-sigma0.50_digits-test_sigma0.25_n100000.tsv`` name the model's training sigma first
    and Cohen et al.'s ``noise_0.25/test/sigma_0.25`` the certification sigma last).

    Example:
        >>> sigma_of("cifar10_resnet110_noise0.25_sigma0.25.tsv")
        0.25
    """
    try:
        recorded = json.loads(settings_path(Path(path)).read_text(encoding="utf-8")).get("sigma")
        if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
            return float(recorded)
    except (OSError, ValueError, AttributeError):
        pass
    matches = _SIGMA_IN_NAME.findall(Path(path).name)
    return float(matches[-1]) if matches else None

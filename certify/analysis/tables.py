"""The tables papers print: certified accuracy at chosen radii, one row per results, in Markdown or
LaTeX, with the best entry of each column in bold (as in Cohen et al. 2019, Table 1); and the
paired comparison of every two of them certified on the same images (exact McNemar tests).

Example:
    >>> print(certified_accuracy_table({"σ = 0.25": results_025, "σ = 0.50": results_050},
    ...                                [0.0, 0.5, 1.0]))
    |  | r = 0.00 | r = 0.50 | r = 1.00 | ACR |
    |---|---|---|---|---|
    | σ = 0.25 | **0.748** | **0.428** | 0.000 | **0.429** |
    | σ = 0.50 | 0.652 | 0.410 | **0.212** | 0.401 |
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from certify.analysis.metrics import average_certified_radius, certified_accuracy, check_radii
from certify.analysis.paired import paired_certified, same_images
from certify.analysis.reader import CertifiedResults

TABLE_STYLES = ("markdown", "latex")

_LATEX_SPECIALS = {char: "\\" + char for char in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "σ": r"$\sigma$",
}


def certified_accuracy_table(
    results_by_label: Mapping[str, CertifiedResults],
    radii: Sequence[float],
    *,
    style: str = "markdown",
    decimals: int = 3,
) -> str:
    """Certified accuracy at each radius, and the average certified radius (ACR), per results.

    Rows follow the order of ``results_by_label``; columns are ``r = <radius>`` for each radius,
    then ``ACR``. In every column the entries whose printed value is the largest are bold (all of
    them on a tie), since that is the comparison a reader of the table can check; a column in
    which every row prints the same value (a one-row table, or all 0.000) has nothing bold.

    Args:
        results_by_label: row label (e.g. ``"σ = 0.25"``) -> results; at least one.
        radii: L2 radii, each finite and >= 0.
        style: ``"markdown"`` (a GitHub pipe table) or ``"latex"`` (a tabular needing no package;
            σ in labels becomes ``$\\sigma$``).
        decimals: digits after the decimal point, 0 to 6.

    Returns:
        The table, ending in a newline.

    Raises:
        ValueError: if results_by_label is empty, radii are invalid, or style or decimals are out
            of range.
    """
    if style not in TABLE_STYLES:
        raise ValueError(f"style must be one of {', '.join(TABLE_STYLES)}, got {style!r}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be an integer from 0 to 6, got {decimals!r}")
    if not results_by_label:
        raise ValueError("results_by_label must map at least one label to results, got none")
    columns = [
        np.append(certified_accuracy(results, radii), average_certified_radius(results))
        for results in results_by_label.values()
    ]
    printed = np.round(np.array(columns), decimals)  # (rows, len(radii) + 1)
    best = printed == printed.max(axis=0, keepdims=True)  # (rows, len(radii) + 1)
    best &= ~best.all(axis=0, keepdims=True)  # a column where every row ties has no best entry
    headers = [f"r = {short_number(radius)}" for radius in radii] + ["ACR"]
    cells = [
        [_bold(f"{value:.{decimals}f}", is_best, style) for value, is_best in zip(row, best_row)]
        for row, best_row in zip(printed, best)
    ]
    if style == "markdown":
        return _markdown(list(results_by_label), headers, cells)
    return _latex(list(results_by_label), headers, cells)


def paired_certified_table(
    results_by_label: Mapping[str, CertifiedResults],
    radii: Sequence[float],
    *,
    style: str = "markdown",
) -> str:
    """Every two results files over the same images, compared image by image at each radius.

    A row ``A vs B`` holds, per radius, ``a / b (p = ...)``: a images certified correctly at that
    radius by A and not by B, b the other way, and the two-sided p-value of the exact McNemar test
    (:func:`certify.analysis.paired_certified`). Unpaired confidence intervals of two certified
    accuracies on the same images overlap far more often than this test fails to separate them.
    Files over other images (another selection, another data set's indices) are paired with
    none; rows follow the order of ``results_by_label``.

    Args:
        results_by_label: row label -> results, as for :func:`certified_accuracy_table`.
        radii: L2 radii, each finite and >= 0.
        style: ``"markdown"`` or ``"latex"``.

    Returns:
        The table, ending in a newline; the empty string if no two files hold the same images.

    Raises:
        ValueError: if radii are invalid or style is out of range.
    """
    if style not in TABLE_STYLES:
        raise ValueError(f"style must be one of {', '.join(TABLE_STYLES)}, got {style!r}")
    check_radii(radii)
    labels, cells = [], []
    for (label_a, a), (label_b, b) in itertools.combinations(results_by_label.items(), 2):
        if not same_images(a, b):
            continue
        labels.append(f"{label_a} vs {label_b}")
        tests = [paired_certified(a, b, float(radius)) for radius in radii]
        cells.append([f"{test.only_a} / {test.only_b} (p = {test.p_value:.2g})"
                      for test in tests])
    if not labels:
        return ""
    headers = [f"r = {short_number(radius)}" for radius in radii]
    corner = "certified by A only / by B only (exact McNemar p)"
    if style == "markdown":
        return _markdown(labels, headers, cells, corner)
    return _latex(labels, headers, cells, corner)


def short_number(value: float) -> str:
    """A radius or sigma as papers print it: two decimals (0.00, 0.25, 0.50) unless more are needed
    to print it exactly (0.125)."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def _bold(text: str, is_best: bool, style: str) -> str:
    if not is_best:
        return text
    return f"**{text}**" if style == "markdown" else rf"\textbf{{{text}}}"


def _markdown(labels: list[str], headers: list[str], cells: list[list[str]],
              corner: str = "") -> str:
    lines = [f"| {corner} | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for label, row in zip(labels, cells):
        escaped = label.replace("|", r"\|")
        lines.append(f"| {escaped} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _latex(labels: list[str], headers: list[str], cells: list[list[str]],
           corner: str = "") -> str:
    lines = [
        r"\begin{tabular}{l" + "r" * len(headers) + "}",
        r"\hline",
        _latex_text(corner) + " & "
        + " & ".join(f"${header}$" if header != "ACR" else header for header in headers)
        + r" \\",
        r"\hline",
    ]
    for label, row in zip(labels, cells):
        lines.append(f"{_latex_text(label)} & " + " & ".join(row) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_text(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)

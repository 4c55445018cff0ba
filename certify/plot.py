"""The certified-accuracy picture: certified accuracy against L2 radius, one curve per results file.

This module never picks a matplotlib backend: it draws on a given Axes, or on a new
:class:`matplotlib.figure.Figure` that is not registered with pyplot, which ``savefig`` writes to
PNG, PDF or SVG under any backend.

Example:
    >>> from certify.analysis import read_results
    >>> results = {f"σ = {s}": read_results(f"sigma{s}.tsv") for s in ("0.25", "0.50")}
    >>> plot_certified_accuracy(results, envelope=True).savefig("curve.png")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from certify.analysis import CertifiedResults, certified_accuracy_curve, envelope_curve

RADIUS_LABEL = "L2 radius (pixel values in [0, 1])"
ACCURACY_LABEL = "certified accuracy (fraction of test images)"


def plot_certified_accuracy(
    results_by_label: Mapping[str, CertifiedResults],
    ax: Axes | None = None,
    *,
    envelope: bool = False,
    title: str | None = None,
) -> Figure:
    """Draw the exact certified-accuracy step curve of each results, and optionally their envelope.

    A point (r, a) on a curve says: a fraction a of the test images is classified correctly by
    the smoothed classifier with a certified L2 radius of at least r (Cohen et al. 2019, Figure 7).
    Curves are drawn in the order of ``results_by_label``; the envelope (their pointwise maximum,
    see :func:`certify.analysis.envelope`) is a dashed black line drawn last.

    Args:
        results_by_label: legend label (e.g. ``"σ = 0.25"``) -> results; at least one.
        ax: the Axes to draw on; by default a new 6.4 x 4.2 inch Figure with one Axes.
        envelope: also draw the envelope of all curves.
        title: an optional title for the Axes.

    Returns:
        The Figure holding the Axes; ``ax.lines`` holds one line per results, then the envelope.

    Raises:
        ValueError: if results_by_label is empty.

    Example:
        >>> fig = plot_certified_accuracy({"σ = 0.25": results}, envelope=True)
        >>> fig.savefig("curve.png", dpi=150)
    """
    if not results_by_label:
        raise ValueError("results_by_label must map at least one label to results, got none")
    if ax is None:
        figure = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = figure.add_subplot()
    for label, results in results_by_label.items():
        radii, accuracies = certified_accuracy_curve(results)
        ax.plot(radii, accuracies, drawstyle="steps-pre", linewidth=1.8, label=label)
    if envelope:
        radii, accuracies = envelope_curve(results_by_label.values())
        ax.plot(
            radii,
            accuracies,
            drawstyle="steps-pre",
            color="black",
            linestyle="--",
            linewidth=1.2,
            label="envelope",
        )
    ax.set_xlabel(RADIUS_LABEL)
    ax.set_ylabel(ACCURACY_LABEL)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)  # a curve at accuracy 1 stays visible above the frame
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return cast(Figure, ax.figure)  # a SubFigure only when the caller's ax lives in one

"""The certified-accuracy figure: one exact step curve per results, the envelope, labelled axes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from certify.analysis import CertifiedResults, certified_accuracy, envelope
from certify.plot import ACCURACY_LABEL, RADIUS_LABEL, plot_certified_accuracy


def make_results(seed: int, scale: float) -> CertifiedResults:
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 3, 40), rng.integers(-1, 3, 40)
    radii = np.where(predictions == -1, 0.0, rng.random(40) * scale)
    return CertifiedResults(
        idx=np.arange(40),
        label=labels,
        predict=predictions,
        radius=radii,
        correct=(labels == predictions).astype(int),
        time=np.ones(40),
    )


RESULTS = {"σ = 0.25": make_results(0, 0.5), "σ = 0.50": make_results(1, 1.0)}


def drawn_value(line, radius: float) -> float:
    """The value a steps-pre line shows at ``radius``: its y at the first x >= radius; past its
    last point a curve that ends at 0 stays 0."""
    xs, ys = line.get_xdata(), line.get_ydata()
    assert ys[-1] == 0
    position = np.searchsorted(xs, radius, side="left")
    return float(ys[position]) if position < len(xs) else 0.0


def test_one_line_per_results_plus_envelope_with_the_right_values():
    figure = plot_certified_accuracy(RESULTS, envelope=True)
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.lines] == ["σ = 0.25", "σ = 0.50", "envelope"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "σ = 0.25",
        "σ = 0.50",
        "envelope",
    ]
    assert ax.get_xlabel() == RADIUS_LABEL and "L2 radius" in RADIUS_LABEL
    assert ax.get_ylabel() == ACCURACY_LABEL and "certified accuracy" in ACCURACY_LABEL
    probes = np.linspace(0, 0.99, 67)
    expected = [certified_accuracy(results, probes) for results in RESULTS.values()]
    expected.append(envelope(RESULTS.values(), probes))
    for line, values in zip(ax.lines, expected):
        assert line.get_drawstyle() == "steps-pre"
        np.testing.assert_array_equal([drawn_value(line, r) for r in probes], values)


def test_without_envelope_there_is_one_line_per_results():
    (ax,) = plot_certified_accuracy(RESULTS).axes
    assert len(ax.lines) == 2


def test_draws_on_a_given_axes():
    figure = Figure()
    ax = figure.add_subplot(1, 2, 2)
    assert plot_certified_accuracy({"σ = 0.25": RESULTS["σ = 0.25"]}, ax=ax, title="t") is figure
    assert len(ax.lines) == 1 and ax.get_title() == "t"


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")]
)
def test_figure_saves_and_opens(tmp_path, suffix, magic):
    path = tmp_path / f"curve{suffix}"
    plot_certified_accuracy(RESULTS, envelope=True).savefig(path, dpi=125)
    assert path.read_bytes().startswith(magic)
    if suffix == ".png":
        height, width, _ = imread(path).shape  # (H, W, RGBA)
        assert (width, height) == (800, 525)  # 6.4 x 4.2 inches at 125 dpi: README width


def test_no_results_is_refused():
    with pytest.raises(ValueError, match="results_by_label"):
        plot_certified_accuracy({})


@pytest.mark.slow
def test_library_never_picks_a_backend(tmp_path):
    # Importing pyplot is how a backend gets picked; the library must draw and save without it.
    script = (
        "import sys, numpy as np\n"
        "from certify.analysis import CertifiedResults\n"
        "from certify.plot import plot_certified_accuracy\n"
        "r = CertifiedResults([0, 1], [1, 2], [1, 2], [0.3, 0.6], [1, 1], [1.0, 1.0])\n"
        f"plot_certified_accuracy({{'a': r}}, envelope=True).savefig({str(tmp_path / 'c.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (tmp_path / "c.png").is_file()

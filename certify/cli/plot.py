"""The ``certify-plot`` command: the certified-accuracy curve and table of results files.

Each results file (Cohen et al.'s format, as written by ``certify``) becomes one curve labelled by
its sigma, read from the settings file ``certify`` writes beside it or from a ``sigma0.25`` /
``sigma_0.25`` in its name (``--labels`` overrides). The figure's format follows the extension of
``--out`` (PNG, PDF or SVG); ``--radii`` prints the table of certified accuracy at those radii,
the best entry of each column in bold, in Markdown or with ``--latex`` in LaTeX; ``--paired`` adds
the exact McNemar test of every two files over the same images at those radii (images certified
by one only, by the other only, and the p-value).

Examples:
    certify-plot results/*_sigma*.tsv --envelope --out docs/certified_accuracy_digits.png
    certify-plot sigma_0.12 sigma_0.25 sigma_0.50 sigma_1.00 --radii 0 0.25 0.5 0.75 1 --latex
    certify-plot a.tsv b.tsv --labels "SimCLR + noise" "supervised" --out curve.pdf
    certify-plot tests/data/cohen2019/*.tsv --radii 0 0.5 1 --out c.svg
    certify-plot baseline.tsv rush.tsv --labels baseline RUSH --radii 0 0.25 0.5 0.75 --paired
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certify.analysis import (
    CertifiedResults,
    certified_accuracy_table,
    paired_certified_table,
    read_results,
    short_number,
    sigma_of,
)
from certify.cli.common import (
    OneLineParser,
    UserError,
    file_path,
    non_negative_float,
    positive_int,
    run_command,
)

FIGURE_FORMATS = (".png", ".pdf", ".svg")
MIN_DPI, MAX_DPI = 10, 1200  # beyond 1200 the PNG's pixels alone take hundreds of MB


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="certify-plot",
        description="Draw the certified-accuracy curve "
        "of Cohen-format results files and print their table.",
    )
    parser.add_argument("results", nargs="+", type=file_path, help="Cohen-format results files")
    parser.add_argument(
        "--out", type=file_path, default=None, help="figure to write: .png, .pdf or .svg"
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="one legend label per results file (default: its sigma)",
    )
    parser.add_argument(
        "--envelope",
        action="store_true",
        help="also draw the envelope (pointwise maximum) of the curves",
    )
    parser.add_argument(
        "--radii",
        nargs="+",
        type=non_negative_float,
        default=None,
        help="print a table of certified accuracy at these L2 radii",
    )
    parser.add_argument(
        "--latex", action="store_true", help="print the table in LaTeX instead of Markdown"
    )
    parser.add_argument(
        "--paired", action="store_true",
        help="below the table, compare every two results files over the same images at those "
             "radii: images certified by one only, by the other only, exact McNemar p",
    )
    parser.add_argument("--title", default=None, help="a title for the figure")
    parser.add_argument(
        "--dpi",
        type=positive_int,
        default=125,
        help="PNG resolution; the figure is 6.4 in wide (default 125: 800 px)",
    )
    return parser


def default_label(path: Path) -> str:
    """'σ = <sigma>' for a results file that records its sigma, else the file's name."""
    sigma = sigma_of(path)
    return path.name if sigma is None else f"σ = {short_number(sigma)}"


def load_labelled(paths: list[Path], labels: list[str] | None) -> dict[str, CertifiedResults]:
    """Read every results file under its label; labels must be as many as files, and distinct."""
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels gave {len(labels)} labels for {len(paths)} results files")
    labels = labels or [default_label(path) for path in paths]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UserError(
            f"several results files have the label {repeated[0]!r}; name each with --labels"
        )
    return {label: read_results(path) for label, path in zip(labels, paths)}


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.radii is None:
        raise UserError("nothing to do: give --out FIGURE and/or --radii R [R ...]")
    if args.out is not None and args.out.suffix.lower() not in FIGURE_FORMATS:
        raise UserError(f"--out must end in {', '.join(FIGURE_FORMATS)}, got {args.out.name!r}")
    if args.latex and args.radii is None:
        raise UserError("--latex formats the table, which needs --radii R [R ...]")
    if args.paired and args.radii is None:
        raise UserError("--paired compares the files at radii, which needs --radii R [R ...]")
    if not MIN_DPI <= args.dpi <= MAX_DPI:
        raise UserError(f"--dpi must be an integer from {MIN_DPI} to {MAX_DPI} (the figure is "
                        f"6.4 in wide: {64 * MIN_DPI // 10} to {64 * MAX_DPI // 10} px), "
                        f"got {args.dpi}")
    results_by_label = load_labelled(args.results, args.labels)
    if args.radii is not None:
        style = "latex" if args.latex else "markdown"
        table = certified_accuracy_table(results_by_label, args.radii, style=style)
        if args.paired:
            paired = paired_certified_table(results_by_label, args.radii, style=style)
            if not paired:
                raise UserError("--paired compares results files over the same images, and no "
                                "two of these hold the same images")
            table += "\n" + paired
        print(table, end="")
    if args.out is not None:
        import matplotlib

        matplotlib.use("Agg")
        from certify.plot import plot_certified_accuracy

        figure = plot_certified_accuracy(results_by_label, envelope=args.envelope, title=args.title)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out, dpi=args.dpi)
        print(f"certify-plot: wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-plot``; returns the exit status (2 for a user error)."""
    return run_command("certify-plot", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

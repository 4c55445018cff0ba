"""benchmarks/adaptive.py with ``--certificates``: a ``certify`` results file stands in for the
fixed-n run and changes no number of the tables, and one made otherwise is refused; target radii
off the curve and ``--curve-radii``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import adaptive
import pytest

from certify.analysis import certified_accuracy, read_results
from certify.cli.certify import main as certify_main
from certify.results import settings_path

DIGITS = ["--model", "digits-sigma0.25", "--dataset", "digits", "--sigma", "0.25", "--skip", "45",
          "--batch", "100"]
"""Every 45th of the 360 digits test images (8), with the shipped digits model."""


def certify_digits(out: Path, n: int) -> Path:
    assert certify_main([*DIGITS, "--n", str(n), "--quiet", "--out", str(out)]) == 0
    return out


def benchmark_tables(capsys, *extra: str) -> str:
    """The benchmark's output on the digits images at n = 1,000 without its timing line."""
    adaptive.main([*DIGITS, "--n", "1000", "--simulate", "--linear-images", "0",
                   "--digits-skip", "0", "--radii", "0.25", *extra])
    output = capsys.readouterr().out
    return re.sub(r"\d+ s on cpu", "TIME", output)


def test_recorded_certificates_give_the_tables_of_running_the_model(tmp_path, capsys) -> None:
    certificates = certify_digits(tmp_path / "fixed.tsv", 1000)
    capsys.readouterr()
    measured = benchmark_tables(capsys)
    recorded = benchmark_tables(capsys, "--certificates", str(certificates))
    assert recorded == measured
    # The fixed-n row is the results file's curve (n0 + n samples an image), and the file
    # certifies some images, so equal outputs are not equal by being empty.
    curve = certified_accuracy(read_results(certificates), adaptive.CURVE_RADII)
    assert curve[0] > 0
    assert (f"| fixed | 1,100 | 1.0x | {' | '.join(f'{value:.3f}' for value in curve)} |"
            in measured)


def test_certificates_made_otherwise_are_refused_with_the_difference(tmp_path, capsys) -> None:
    other_n = certify_digits(tmp_path / "n500.tsv", 500)
    with pytest.raises(SystemExit) as stopped:
        benchmark_tables(capsys, "--certificates", str(other_n))
    assert stopped.value.code == 2
    assert "--certificates" in capsys.readouterr().err
    # Rows that lack some of the images, and rows of other images (labels that differ).
    fixed = certify_digits(tmp_path / "fixed.tsv", 1000)
    lines = fixed.read_text().splitlines(keepends=True)
    fixed.write_text("".join(lines[:4]))
    with pytest.raises(SystemExit):
        benchmark_tables(capsys, "--certificates", str(fixed))
    assert "lack 5 of the 8 images, the first 135" in capsys.readouterr().err
    header, first, *rest = lines
    fields = first.split("\t")
    fields[1] = str((int(fields[1]) + 1) % 10)
    fixed.write_text("".join([header, "\t".join(fields), *rest]))
    with pytest.raises(SystemExit):
        benchmark_tables(capsys, "--certificates", str(fixed))
    assert "give image 0 the label" in capsys.readouterr().err
    settings = json.loads(settings_path(fixed).read_text())
    settings_path(fixed).write_text(json.dumps({**settings, "seed": 1}))
    with pytest.raises(SystemExit):
        benchmark_tables(capsys, "--certificates", str(fixed))
    assert "seed 1 (here 0)" in capsys.readouterr().err


def test_target_radii_off_the_curve_and_other_curve_radii(tmp_path, capsys) -> None:
    """A target radius that is not one of the curve's (1.25 at sigma 0.5 made the sigma 0.5 run
    fail) is compared with fixed n all the same, and --curve-radii sets the adaptive table's
    columns; the fixed-n cells are the results file's certified accuracy at each radius."""
    certificates = certify_digits(tmp_path / "fixed.tsv", 1000)
    capsys.readouterr()
    tables = benchmark_tables(capsys, "0.45", "--curve-radii", "0.4", "0", "0.5",
                              "--certificates", str(certificates))
    radii = (0.0, 0.25, 0.4, 0.45, 0.5)
    fixed = dict(zip(radii, certified_accuracy(read_results(certificates), radii), strict=True))
    # The file's curve differs at each radius, so each cell below is read at its own radius.
    assert fixed[0.0] > fixed[0.4] > fixed[0.45] > fixed[0.5] > 0
    for target in (0.25, 0.45):
        assert f"| {target:.2f} | 1,100 ({fixed[target]:.3f}) |" in tables
    assert "| r = 0.00 | r = 0.40 | r = 0.50 | max diff (points) |" in tables
    curve = " | ".join(f"{fixed[r]:.3f}" for r in (0.0, 0.4, 0.5))
    assert f"| fixed | 1,100 | 1.0x | {curve} |" in tables

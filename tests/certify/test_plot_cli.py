"""The certify-plot command: figures by extension, labels by sigma, tables, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

import certify.plot
from certify.analysis import certified_accuracy_table, paired_certified_table, read_results
from certify.cli.plot import main
from certify.results import settings_path

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\tpA_lower\tcount\tsamples\n"
ROWS = {  # sigma -> rows (radii grow with sigma, accuracy falls), Cohen's columns then ours
    "0.12": [
        "0\t1\t1\t0.2\t1\t1.5\t0.9\t90\t100",
        "1\t2\t2\t0.1\t1\t0:00:01.5\t0.8\t80\t100",
        "2\t3\t3\t0.3\t1\t1.5\t0.99\t99\t100",
        "3\t4\t0\t0.3\t0\t1.5\t0.99\t99\t100",
    ],
    "0.25": [
        "0\t1\t1\t0.5\t1\t1.5\t0.9\t90\t100",
        "1\t2\t-1\t0.0\t0\t1.5\t0.4\t40\t100",
        "2\t3\t3\t0.7\t1\t1.5\t0.99\t99\t100",
        "3\t4\t4\t0.1\t1\t1.5\t0.6\t60\t100",
    ],
    "0.50": [
        "0\t1\t1\t1.0\t1\t1.5\t0.9\t90\t100",
        "1\t2\t-1\t0.0\t0\t1.5\t0.4\t40\t100",
        "2\t3\t3\t1.2\t1\t1.5\t0.99\t99\t100",
        "3\t4\t0\t0.3\t0\t1.5\t0.6\t60\t100",
    ],
    "1.00": [
        "0\t1\t1\t1.5\t1\t1.5\t0.9\t90\t100",
        "1\t2\t-1\t0.0\t0\t1.5\t0.4\t40\t100",
        "2\t3\t-1\t0.0\t0\t1.5\t0.4\t40\t100",
        "3\t4\t0\t0.3\t0\t1.5\t0.6\t60\t100",
    ],
}


@pytest.fixture
def results_files(tmp_path: Path) -> list[Path]:
    paths = []
    for sigma, rows in ROWS.items():
        path = tmp_path / f"digits-sigma{sigma}_digits-test_sigma{sigma}_n100.tsv"
        path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of certify-plot, whether it returns or exits."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures certify-plot draws, captured from certify.plot."""
    figures = []
    original = certify.plot.plot_certified_accuracy

    def recording(*args, **kwargs):
        figures.append(original(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(certify.plot, "plot_certified_accuracy", recording)
    return figures


def test_png_with_one_line_per_file_plus_envelope_labelled_by_sigma(
    results_files, tmp_path, capsys, drawn
):
    out = tmp_path / "figures" / "curve.png"
    status, stdout, stderr = run_cli([*results_files, "--envelope", "--out", out], capsys)
    assert (status, stdout, stderr) == (0, "", f"certify-plot: wrote {out}\n")
    height, width, _ = imread(out).shape  # (H, W, RGBA): the file exists and opens
    assert (width, height) == (800, 525)
    (ax,) = drawn[0].axes
    assert [line.get_label() for line in ax.lines] == [
        "σ = 0.12",
        "σ = 0.25",
        "σ = 0.50",
        "σ = 1.00",
        "envelope",
    ]


@pytest.mark.parametrize(
    "suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".PNG", b"\x89PNG")]
)
def test_format_follows_the_extension(results_files, tmp_path, capsys, suffix, magic):
    out = tmp_path / f"curve{suffix}"
    assert run_cli([*results_files[:2], "--out", out], capsys)[0] == 0
    assert out.read_bytes().startswith(magic)


def test_table_in_markdown_and_latex(results_files, capsys):
    radii = [0.0, 0.25, 0.5, 1.0]
    expected = {f"σ = {sigma}": read_results(path) for sigma, path in zip(ROWS, results_files)}
    status, stdout, _ = run_cli([*results_files, "--radii", *radii], capsys)
    assert status == 0 and stdout == certified_accuracy_table(expected, radii)
    # Counted by hand from ROWS: at r = 0.25, sigma 0.12 keeps 1 of 4 and sigma 0.25 keeps 2.
    assert "| σ = 0.25 | **0.750** | **0.500** | **0.500** | 0.000 |" in stdout
    status, stdout, _ = run_cli([*results_files, "--radii", *radii, "--latex"], capsys)
    assert status == 0
    assert stdout == certified_accuracy_table(expected, radii, style="latex")


def test_paired_flag_adds_the_paired_table_below(results_files, capsys):
    radii = [0.0, 0.5]
    expected = {f"σ = {sigma}": read_results(path) for sigma, path in zip(ROWS, results_files)}
    status, stdout, _ = run_cli([*results_files, "--radii", *radii, "--paired"], capsys)
    assert status == 0
    assert stdout == (certified_accuracy_table(expected, radii) + "\n"
                      + paired_certified_table(expected, radii))
    # Counted by hand from ROWS: sigma 0.25 certifies images 0, 2 and 3 correctly at r = 0 and 0
    # and 2 at 0.5; sigma 1.00 image 0 at both. Two discordant images: p = 2 * (1 / 2) ** 2.
    assert "| σ = 0.25 vs σ = 1.00 | 2 / 0 (p = 0.5) | 1 / 0 (p = 1) |" in stdout


def test_labels_flag_and_the_settings_file_name_the_curves(results_files, tmp_path, capsys, drawn):
    settings_path(results_files[0]).write_text(json.dumps({"sigma": 0.125}), encoding="utf-8")
    out = tmp_path / "c.png"
    assert run_cli([*results_files[:2], "--out", out], capsys)[0] == 0
    assert [line.get_label() for line in drawn[-1].axes[0].lines] == ["σ = 0.125", "σ = 0.25"]
    assert run_cli([*results_files[:2], "--labels", "a", "b", "--out", out], capsys)[0] == 0
    assert [line.get_label() for line in drawn[-1].axes[0].lines] == ["a", "b"]


def test_a_file_without_sigma_is_labelled_by_its_name(tmp_path, capsys):
    path = tmp_path / "baseline.tsv"
    path.write_text(HEADER + ROWS["0.25"][0] + "\n", encoding="utf-8")
    status, stdout, _ = run_cli([path, "--radii", 0], capsys)
    assert status == 0 and "| baseline.tsv | 1.000 | 0.500 |" in stdout


BAD_RUNS = {
    "nothing to do": ([], "nothing to do"),
    "jpeg": (["--out", "c.jpg"], "--out must end in .png, .pdf, .svg"),
    "labels count": (["--labels", "a", "--radii", "0"], "2 results files"),
    "same label": (["--labels", "a", "a", "--radii", "0"], "label 'a'"),
    "negative radius": (["--radii", "-0.5"], "--radii: expected a finite number >= 0"),
    "latex without radii": (["--latex", "--out", "c.png"], "--latex"),
    "paired without radii": (["--paired", "--out", "c.png"], "--paired"),
    "unknown flag": (["--colour", "red"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_user_errors_exit_2_with_one_line(results_files, tmp_path, capsys, case):
    flags, problem = BAD_RUNS[case]
    status, stdout, stderr = run_cli([*results_files[:2], *flags], capsys)
    assert status == 2 and stdout == ""
    assert stderr.startswith("certify-plot: error: ") and stderr.count("\n") == 1
    assert problem in stderr


def test_paired_over_no_shared_images_exits_2_and_prints_nothing(results_files, tmp_path, capsys):
    other = tmp_path / "other_sigma0.25.tsv"
    other.write_text(HEADER + "9\t1\t1\t0.5\t1\t1.5\t0.9\t90\t100\n", encoding="utf-8")
    status, stdout, stderr = run_cli([results_files[0], other, "--radii", 0, "--paired"], capsys)
    assert status == 2 and stdout == "" and stderr.count("\n") == 1
    assert "no two of these hold the same images" in stderr


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("idx,label,predict,radius,correct,time\n0,1,1,0.5,1,1.5\n", "not tab-separated"),
        ("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t1.5\n", "lacks column(s) radius"),
    ],
)
def test_bad_results_file_exits_2_naming_it(tmp_path, capsys, text, problem):
    path = tmp_path / "bad_sigma0.25.tsv"
    path.write_text(text, encoding="utf-8")
    status, _, stderr = run_cli([path, "--out", tmp_path / "c.png"], capsys)
    assert status == 2 and stderr.count("\n") == 1
    assert f"results file {path}: " in stderr and problem in stderr
    assert not (tmp_path / "c.png").exists()


@pytest.mark.slow
def test_runs_as_a_module(results_files, tmp_path):
    out = tmp_path / "c.svg"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "certify.cli.plot",
            *map(str, results_files),
            "--out",
            str(out),
            "--radii",
            "0.5",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and done.stdout.startswith("|  | r = 0.50 | ACR |")

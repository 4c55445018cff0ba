"""The ``certify-attack`` and ``certify-audit`` commands end to end: rows and summaries, resuming
row by row, refusing to overwrite, reading certificates from ``certify``, one-line user errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from certify.analysis import accuracy_interval
from certify.cli.attack import main
from certify.cli.audit import main as audit_main
from certify.cli.certify import main as certify_main
from certify.run_modes import ATTACK_COLUMNS, AUDIT_COLUMNS

REPO = Path(__file__).resolve().parents[2]
IMAGES = [0, 180]  # --skip 180 on the 360 digits test images


def attack_arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n", "100", "--batch", "100",
            "--steps", "2", "--eot-samples", "2", "--linf-eps", "8/255", "--l2-eps", "0.5",
            "--skip", "180", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def audit_arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n0", "20", "--n", "200",
            "--predict-n", "100", "--batch", "200", "--steps", "2", "--eot-samples", "2",
            "--skip", "180", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if key != "time"} for row in rows]


EIGHT_OVER_255 = "0.03137254901960784"  # 8/255 exactly: the shortest decimal of that float
EVALUATIONS = [("base", "clean", "-", "0"), ("smoothed", "clean", "-", "0"),
               ("base", "pgd", "linf", EIGHT_OVER_255),
               ("smoothed", "naive-pgd", "linf", EIGHT_OVER_255),
               ("smoothed", "eot-pgd", "linf", EIGHT_OVER_255), ("base", "pgd", "l2", "0.5"),
               ("smoothed", "naive-pgd", "l2", "0.5"), ("smoothed", "eot-pgd", "l2", "0.5")]


def test_attack_writes_one_row_per_image_and_evaluation(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "attack.tsv"
    assert main(attack_arguments(checkpoint, out)) == 0
    rows = read_rows(out)
    assert list(rows[0]) == list(ATTACK_COLUMNS)
    keys = [(int(r["idx"]), r["classifier"], r["attack"], r["norm"], r["eps"]) for r in rows]
    assert keys == [(idx, *evaluation) for idx in IMAGES for evaluation in EVALUATIONS]
    for row in rows:
        assert int(row["correct"]) == int(row["predict"] == row["label"])
        assert float(row["time"]) >= 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"certify-attack: {len(IMAGES)} images -> {out}"
    for (classifier, attack, norm, eps), line in zip(EVALUATIONS, printed[2:], strict=True):
        correct = [int(r["correct"]) for r in rows
                   if (r["classifier"], r["attack"], r["norm"], r["eps"])
                   == (classifier, attack, norm, eps)]
        low, high = accuracy_interval(sum(correct), len(correct))
        assert line.split() == [classifier, attack, norm, eps, f"{sum(correct) / len(correct):.4f}",
                                f"[{low:.4f},", f"{high:.4f}]"]


def test_attack_resumes_row_by_row_and_refuses_other_settings(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "attack.tsv"
    assert main(attack_arguments(checkpoint, out)) == 0
    complete = out.read_bytes()
    assert main(attack_arguments(checkpoint, out)) == 0
    assert out.read_bytes() == complete  # nothing redone, nothing appended
    # Cut the last image short (three rows kept, a torn fourth): the rerun redoes that image
    # with the same per-image noise and writes back exactly the missing rows.
    lines = complete.split(b"\n")
    out.write_bytes(b"\n".join(lines[:-6]) + b"\n" + lines[-6][:5])
    assert main(attack_arguments(checkpoint, out)) == 0
    assert without_time(read_rows(out)) == without_time(
        [dict(zip(ATTACK_COLUMNS, line.decode().split("\t"))) for line in lines[1:-1]])
    capsys.readouterr()
    assert main(attack_arguments(checkpoint, out, "--steps", "3")) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "steps" in error and "--overwrite" in error
    assert main(attack_arguments(checkpoint, out, "--steps", "3", "--overwrite")) == 0


def test_audit_certifies_attacks_and_counts_violations(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "audit.tsv"
    assert audit_main(audit_arguments(checkpoint, out)) == 0
    rows = read_rows(out)
    assert list(rows[0]) == list(AUDIT_COLUMNS)
    assert [int(row["idx"]) for row in rows] == IMAGES
    attacked = 0
    for row in rows:
        radius = float(row["radius"])
        if int(row["predict"]) == -1:
            assert radius == 0 and row["attacked"] == "-" and row["violation"] == "0"
            continue
        attacked += 1
        assert float(row["epsilon"]) == pytest.approx(0.99 * radius, abs=2e-6)
        assert int(row["violation"]) == int(int(row["attacked"]) not in (-1, int(row["predict"])))
    printed = capsys.readouterr().out
    assert f"certified and attacked           {attacked}\n" in printed
    assert "violations" in printed


def test_audit_reads_certificates_from_certify(checkpoint, tmp_path, capsys) -> None:
    certificates = tmp_path / "certify_sigma0.25.tsv"
    assert certify_main(["--model", str(checkpoint), "--sigma", "0.25", "--n0", "20", "--n",
                         "200", "--batch", "200", "--skip", "180", "--device", "cpu", "--quiet",
                         "--out", str(certificates)]) == 0
    out = tmp_path / "audit.tsv"
    assert audit_main(audit_arguments(checkpoint, out, "--certificates", str(certificates))) == 0
    certified = read_rows(certificates)
    audited = read_rows(out)
    assert [(r["idx"], r["predict"], r["radius"]) for r in audited] == [
        (r["idx"], r["predict"], r["radius"]) for r in certified]
    capsys.readouterr()
    other_sigma = audit_arguments(checkpoint, tmp_path / "other.tsv", "--certificates",
                                  str(certificates))
    other_sigma[other_sigma.index("--sigma") + 1] = "0.5"
    assert audit_main(other_sigma) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "sigma" in error


def exit_status(entry, argv: list[str]) -> int:
    """The status a console script would exit with (argparse exits by raising SystemExit)."""
    try:
        return entry(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize(
    ("entry", "arguments", "words"),
    [
        (main, ["--sigma", "0.25", "--model", "no-such-model.pt"],
         ["certify-attack", "no-such-model"]),
        (audit_main, ["--sigma", "0.25", "--model", "no-such-model.pt"],
         ["certify-audit", "no-such-model"]),
        (main, ["--sigma", "0.25", "--l2-eps", "-1"], ["certify-attack", "--l2-eps"]),
        (main, ["--sigma", "0.25", "--linf-eps", "8/0"], ["certify-attack", "--linf-eps"]),
        (audit_main, ["--sigma", "0.25", "--shrink", "1.5"], ["certify-audit", "--shrink"]),
        (main, ["--sigma", "0.25", "--steps", "0"], ["certify-attack", "--steps"]),
        (main, ["--sigma", "0.33"], ["certify-attack", "sigma"]),
    ],
)
def test_user_errors_are_one_line_and_exit_2(entry, arguments, words, capsys) -> None:
    assert exit_status(entry, arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    for word in words:
        assert word in error


@pytest.mark.slow
def test_python_dash_m_audit_runs_certify_audit() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "certify.cli.audit", "--sigma", "0.25", "--model",
         "no-such-model.pt"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert finished.returncode == 2
    assert finished.stderr.startswith("certify-audit: error: ")
    assert finished.stderr.count("\n") == 1

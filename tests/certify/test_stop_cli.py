"""The dataset commands stop cleanly at --time-limit or on SIGTERM and resume when rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from command_output import StepClock, one_line_error, rows_but_time

import certify.run_modes as modes
import certify.runner as runner
from certify.cli.attack import main as attack_main
from certify.cli.audit import main as audit_main
from certify.cli.certify import main as certify_main
from certify.cli.predict import main as predict_main
from certify.results import read_rows

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--sigma", "0.25", "--device", "cpu", "--quiet", "--batch", "100", "--skip", "60"]
COMMANDS = {
    "certify": (certify_main, ["--n0", "20", "--n", "100"]),
    "certify-predict": (predict_main, ["--n", "100"]),
    "certify-attack": (attack_main, ["--n", "50", "--steps", "1", "--eot-samples", "2",
                                     "--linf-eps", "--l2-eps", "0.5", "--attack-batch", "2"]),
    "certify-audit": (audit_main, ["--n0", "20", "--n", "100", "--predict-n", "50", "--steps",
                                   "1", "--eot-samples", "2", "--attack-batch", "2"]),
}




@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_time_limit_stops_reports_and_a_rerun_resumes_to_the_uninterrupted_file(
        command, tmp_path, capsys, monkeypatch) -> None:
    main, own = COMMANDS[command]
    assert main([*COMMON, *own, "--out", str(tmp_path / "whole.tsv")]) == 0
    monkeypatch.setattr(runner.time, "monotonic", StepClock())
    argv = [*COMMON, *own, "--out", str(tmp_path / "run.tsv"), "--time-limit", "3.5s"]
    capsys.readouterr()
    assert main(argv) == 0  # a clean stop, as the training commands' --time-limit
    taken = 4 if command in ("certify-attack", "certify-audit") else 2  # two chunks
    assert capsys.readouterr().out.strip() == (
        f"stopped after image {taken} of 6 (time limit); {tmp_path / 'run.tsv'} holds the run: "
        "rerun the same command to resume")
    assert len({row["idx"] for row in read_rows(tmp_path / "run.tsv")}) == taken
    for _ in range(3):
        assert main(argv) == 0
    assert rows_but_time(tmp_path / "run.tsv") == rows_but_time(tmp_path / "whole.tsv")


def test_sigterm_stops_certify_after_the_image_at_hand(tmp_path, capsys, monkeypatch) -> None:
    main, own = COMMANDS["certify"]
    argv = [*COMMON, *own, "--out", str(tmp_path / "run.tsv")]
    made = modes.Certify.rows

    def terminated_during_the_second(self, *args, **kwargs):
        terminated_during_the_second.calls += 1
        if terminated_during_the_second.calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return made(self, *args, **kwargs)

    terminated_during_the_second.calls = 0
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(modes.Certify, "rows", terminated_during_the_second)
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("stopped after image 2 of 6 (SIGTERM); ")
    assert [row["idx"] for row in read_rows(tmp_path / "run.tsv")] == ["0", "60"]
    assert signal.getsignal(signal.SIGTERM) is handler
    monkeypatch.setattr(modes.Certify, "rows", made)
    assert main(argv) == 0
    assert [row["idx"] for row in read_rows(tmp_path / "run.tsv")] == [
        str(idx) for idx in range(0, 360, 60)]


@pytest.mark.parametrize("limit", ["0", "-5m", "soon"])
def test_a_bad_time_limit_is_one_line(limit, tmp_path, capsys) -> None:
    main, own = COMMANDS["certify"]
    assert main([*COMMON, *own, "--out", str(tmp_path / "run.tsv"), "--time-limit", limit]) == 2
    assert "--time-limit" in one_line_error(capsys)
    assert not (tmp_path / "run.tsv").exists()


def test_sigterm_to_a_running_certify_process_leaves_complete_rows_and_exit_0(tmp_path) -> None:
    out = tmp_path / "run.tsv"
    started = subprocess.Popen(
        [sys.executable, "-m", "certify", *COMMON[:-2], "--skip", "1", "--n0", "20", "--n",
         "2000", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not out.exists() or out.read_text().count("\n") < 3):  # the header and two rows
        time.sleep(0.05)
    started.send_signal(signal.SIGTERM)
    report, error = started.communicate(timeout=120)
    assert started.returncode == 0, error[-2000:]
    done = len(read_rows(out))
    assert report.strip() == (f"stopped after image {done} of 360 (SIGTERM); {out} holds the run: "
                              "rerun the same command to resume")
    assert 2 <= done < 360 and out.read_text().endswith("\n")
    assert not out.with_name("run.tsv.lock").exists()

"""benchmarks/attack_ladder.py at a tiny size on the shipped digits model: rungs that differ only
in restarts share one attack, and that changes no row; a rerun resumes a group where its files
stopped."""

from __future__ import annotations

import csv
from pathlib import Path

import attack_ladder

from tests.command_output import rows_but_time


def run_ladder(out_dir: Path, restarts: list[str], *more: str) -> int:
    arguments = ["--model", "digits-sigma0.25", "--dataset", "digits", "--sigma", "0.25",
                 "--eps", "0.15", "--eot-samples", "1", "4", "--steps", "3", "--restarts",
                 *restarts, "--skip", "45", "--n", "100", "--batch", "100", "--attack-batch", "3",
                 "--device", "cpu", "--out-dir", str(out_dir), *more]
    return attack_ladder.main(arguments)


def rung_files(out_dir: Path) -> dict[str, list[dict[str, str]]]:
    return {path.name: rows_but_time(path) for path in sorted(out_dir.glob("*.tsv"))
            if path.name != "ladder.tsv"}


def test_shared_restarts_give_the_rows_of_an_attack_per_rung(tmp_path, capsys) -> None:
    assert run_ladder(tmp_path / "shared", ["1", "2"]) == 0
    assert "30 forward-backward passes per image" in capsys.readouterr().out  # (1 + 4) * 3 * 2
    shared = rung_files(tmp_path / "shared")
    separate = {}
    for restarts in ("1", "2"):
        assert run_ladder(tmp_path / f"restarts{restarts}", [restarts]) == 0
        separate.update(rung_files(tmp_path / f"restarts{restarts}"))
    assert sorted(shared) == sorted(separate)
    assert len(shared) == 5  # clean, and naive and EOT at 1 and 2 restarts
    for name, rows in shared.items():
        assert len(rows) == 8, name  # every 45th of the 360 digits test images
        assert rows == separate[name], name
    # The attacks did something, so equal files are not equal by default.
    accuracy = {name: sum(int(row["correct"]) for row in rows) for name, rows in shared.items()}
    assert accuracy["eot_m4_steps3_restarts2.tsv"] < accuracy["clean.tsv"]


def test_a_rerun_resumes_each_rung_of_a_group_where_it_stopped(tmp_path) -> None:
    out_dir = tmp_path / "ladder"
    assert run_ladder(out_dir, ["1", "2"]) == 0
    finished = rung_files(out_dir)
    # One rung lost, its sibling cut to its header and four rows, mid-chunk.
    (out_dir / "eot_m4_steps3_restarts1.tsv").unlink()
    cut = out_dir / "eot_m4_steps3_restarts2.tsv"
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:5]))
    assert run_ladder(out_dir, ["1", "2"]) == 0
    assert rung_files(out_dir) == finished
    with open(out_dir / "ladder.tsv", newline="") as handle:
        summary = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(row["images"]) for row in summary] == [8] * 5


def test_a_time_limit_stops_before_a_chunk_and_the_rerun_finishes_the_same_rows(
        tmp_path, capsys) -> None:
    assert run_ladder(tmp_path / "whole", ["1", "2"]) == 0
    whole = rung_files(tmp_path / "whole")
    capsys.readouterr()
    out_dir = tmp_path / "stopped"
    # The first chunk always runs; at any pace, the next chunk cannot end within 1e-6 s.
    assert run_ladder(out_dir, ["1", "2"], "--time-limit", "1e-6") == 0
    printed = capsys.readouterr().out
    assert "stopped at no attack (time limit)" in printed
    assert not (out_dir / "ladder.tsv").exists()
    assert [len(rows) for rows in rung_files(out_dir).values()] == [3]  # one chunk of clean
    assert run_ladder(out_dir, ["1", "2"], "--channels-last") == 2  # another setting: refused
    assert "differs in channels_last" in capsys.readouterr().err
    assert run_ladder(out_dir, ["1", "2"]) == 0
    assert rung_files(out_dir) == whole

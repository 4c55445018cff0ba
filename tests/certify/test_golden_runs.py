"""The dataset commands write exactly the files they wrote when these fixtures were made.

tests/data/golden/ holds the results files (and their ``.run.json`` settings, shard parts and
completion markers) that ``certify``, ``certify --adaptive``, ``certify --radius``,
``certify-predict``, ``certify-attack``, ``certify-audit`` and a two-shard ``certify`` joined by
``certify-merge`` wrote on the shipped digits model. Each scenario is run again here, from scratch
and resumed from a file cut off mid-row, and every file must equal its fixture in every column but
``time``.

Regenerate the fixtures (only where a change of the files is intended) with::

    python tests/certify/test_golden_runs.py
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from certify.cli.attack import main as attack_main
from certify.cli.audit import main as audit_main
from certify.cli.certify import main as certify_main
from certify.cli.merge import main as merge_main
from certify.cli.predict import main as predict_main

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
COMMON = ["--sigma", "0.5", "--device", "cpu", "--quiet"]
SMALL = ["--n", "200", "--n0", "20", "--batch", "100", "--skip", "30"]
ATTACK = ["--n", "100", "--batch", "100", "--skip", "60", "--steps", "2", "--eot-samples", "2",
          "--attack-batch", "4", "--linf-eps", "8/255", "--l2-eps", "0.5"]
AUDIT = ["--n", "200", "--n0", "20", "--predict-n", "100", "--batch", "100", "--skip", "60",
         "--steps", "2", "--eot-samples", "2", "--attack-batch", "4"]

Step = tuple[Callable[[list[str]], int], list[str]]
SCENARIOS: dict[str, list[Step]] = {
    "certify": [(certify_main, [*SMALL, "--out", "run.tsv"])],
    "adaptive": [(certify_main, [*SMALL, "--adaptive", "--out", "run.tsv"])],
    "radius": [(certify_main, [*SMALL, "--radius", "0.5", "--rule", "clopper-pearson",
                               "--out", "run.tsv"])],
    "predict": [(predict_main, ["--n", "200", "--batch", "100", "--skip", "30"])],  # default out
    "attack": [(attack_main, [*ATTACK, "--out", "run.tsv"])],
    "audit": [(audit_main, [*AUDIT, "--out", "run.tsv"])],
    "shards": [(certify_main, [*SMALL, "--shard", "0/2", "--out", "run.tsv"]),
               (certify_main, [*SMALL, "--shard", "1/2", "--out", "run.tsv"]),
               (merge_main, ["run.tsv", "--shards", "2"])],
}
RESUMED = {"certify": "run.tsv", "attack": "run.tsv", "audit": "run.tsv",
           "shards": "run.tsv.part1of2"}
"""The scenarios also run resumed: their file (here) cut off after three rows and half a row."""


def produce(scenario: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a scenario's commands in ``folder``."""
    monkeypatch.chdir(folder)
    for main, argv in SCENARIOS[scenario]:
        if main is merge_main:
            assert main(argv) == 0
        else:
            assert main([*COMMON, *argv]) == 0


def outputs(folder: Path) -> dict[str, Path]:
    """Every file a scenario left, by its path inside ``folder``."""
    return {str(path.relative_to(folder)): path for path in sorted(folder.rglob("*"))
            if path.is_file()}


def without_time(path: Path) -> list[list[str]]:
    """A results file's lines as fields, the ``time`` column removed."""
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")]
    if "time" not in lines[0]:
        return lines
    column = lines[0].index("time")
    return [fields[:column] + fields[column + 1:] if len(fields) > column else fields
            for fields in lines]


def assert_same_files(made: Path, golden: Path) -> None:
    """Every file in ``made`` equals its fixture in ``golden`` (results files in every column but
    time, settings as JSON), and neither folder has a file the other lacks."""
    mine, theirs = outputs(made), outputs(golden)
    assert sorted(mine) == sorted(theirs)
    for name, path in mine.items():
        if name.endswith(".json") or name.endswith(".complete"):
            assert json.loads(path.read_text()) == json.loads(theirs[name].read_text()), name
        else:
            assert without_time(path) == without_time(theirs[name]), name


SLOW = {"adaptive", "radius"}
"""Scenarios run only with ``-m slow`` (the default run keeps to about 20 s)."""
SLOW_RESUMED = {"attack", "audit"}


def cases(names: list[str], slow: set[str]) -> list:
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name
            for name in sorted(names)]


@pytest.mark.parametrize("scenario", cases(list(SCENARIOS), SLOW))
def test_the_commands_write_the_golden_files(scenario, tmp_path, monkeypatch) -> None:
    produce(scenario, tmp_path, monkeypatch)
    assert_same_files(tmp_path, GOLDEN / scenario)


@pytest.mark.parametrize("scenario", cases(list(RESUMED), SLOW_RESUMED))
def test_a_resumed_run_writes_the_golden_files(scenario, tmp_path, monkeypatch) -> None:
    """A run killed mid-row (three rows and a torn one on disk) and rerun ends as the fixture."""
    shutil.copytree(GOLDEN / scenario, tmp_path, dirs_exist_ok=True)
    cut = tmp_path / RESUMED[scenario]
    lines = cut.read_text(encoding="utf-8").split("\n")
    cut.write_text("\n".join(lines[:4]) + "\n" + lines[4][:len(lines[4]) // 2], encoding="utf-8")
    for made in (tmp_path / "run.tsv", tmp_path / "run.tsv.part0of2.complete",
                 tmp_path / "run.tsv.part1of2.complete"):
        if made != cut and scenario == "shards":
            made.unlink()  # the joined file and the markers come after the parts
    produce(scenario, tmp_path, monkeypatch)
    assert_same_files(tmp_path, GOLDEN / scenario)


def test_the_comparison_sees_a_changed_column(tmp_path) -> None:
    """Not vacuous: a changed radius (or a missing file) is found, a changed time is not."""
    shutil.copytree(GOLDEN / "certify", tmp_path, dirs_exist_ok=True)
    results = tmp_path / "run.tsv"
    header, first, *rest = results.read_text(encoding="utf-8").split("\n")
    fields = first.split("\t")
    fields[header.split("\t").index("time")] = "99.0"
    results.write_text("\n".join([header, "\t".join(fields), *rest]), encoding="utf-8")
    assert_same_files(tmp_path, GOLDEN / "certify")
    fields[header.split("\t").index("radius")] = "0.123456"
    results.write_text("\n".join([header, "\t".join(fields), *rest]), encoding="utf-8")
    with pytest.raises(AssertionError):
        assert_same_files(tmp_path, GOLDEN / "certify")
    results.unlink()
    with pytest.raises(AssertionError):
        assert_same_files(tmp_path, GOLDEN / "certify")


def regenerate() -> None:
    """Write the fixtures afresh with the commands as they are."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        for scenario in SCENARIOS:
            folder = GOLDEN / scenario
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            produce(scenario, folder, monkeypatch)
    finally:
        monkeypatch.undo()


if __name__ == "__main__":
    regenerate()
    sys.exit(0)

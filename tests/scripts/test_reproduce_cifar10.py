"""scripts/reproduce_cifar10.sh with stand-in commands: which command each step runs, with which
time bound, and what it skips. The stand-ins log their arguments instead of training or certifying,
so the whole plan runs in a second."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_cifar10.sh"
COMMANDS = ("encoders-pretrain", "encoders-finetune", "certify", "certify-plot", "certify-attack",
            "certify-audit", "python")
STAND_IN = """#!/usr/bin/env bash
# logs its name and arguments, one call a line, arguments tab-separated
printf '%s' "$(basename "$0")" >> "$STAND_IN_LOG"
printf '\\t%s' "$@" >> "$STAND_IN_LOG"
printf '\\n' >> "$STAND_IN_LOG"
echo "stand-in output"
"""


@pytest.fixture
def plan(tmp_path: Path):
    """Runs the script with stand-in commands and scratch folders; returns (result, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    folders = {name: tmp_path / name.lower() for name in ("RUNS", "DOCS", "MODELS")}
    folders["MODELS"].mkdir()

    def run(*steps: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        log.write_text("")
        environment = {**os.environ, "BIN": str(bin_dir), "STAND_IN_LOG": str(log),
                       **{name: str(path) for name, path in folders.items()}, **env}
        result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data"), *steps],
                                env=environment, capture_output=True, text=True, timeout=60)
        calls = [line.split("\t") for line in log.read_text().splitlines()]
        return result, calls

    run.folders = folders  # type: ignore[attr-defined]
    return run


def ship(plan, *names: str, sigma: str = "0.25") -> None:
    for name in names:
        (plan.folders["MODELS"] / f"cifar10-{name}-sigma{sigma}.pt").write_text("weights")


def flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def in_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + seconds))


def test_time_limit_and_deadline_together_and_an_unreadable_deadline_exit_2(plan) -> None:
    result, calls = plan("certify", TIME_LIMIT="1h", DEADLINE=in_seconds(3600))
    assert (result.returncode, result.stderr.strip()) == (2, "set TIME_LIMIT or DEADLINE, not both")
    result, _ = plan("certify", DEADLINE="half past never")
    assert result.returncode == 2 and "date cannot read 'half past never'" in result.stderr
    assert calls == []


def test_the_deadline_bounds_every_long_command_of_every_shipped_model(plan) -> None:
    ship(plan, "cohen", "rush")
    result, calls = plan("certify", "attack", "audit", "ladder", DEADLINE=in_seconds(7200))
    assert result.returncode == 0, result.stderr
    results = plan.folders["DOCS"] / "results"
    *calls, ladder = calls
    assert ladder[1] == "benchmarks/attack_ladder.py"
    assert (flag(ladder, "--out-dir"), flag(ladder, "--attack-batch")) == (
        f"{results}/ladder_sigma0.25", "5")
    assert 7100 < int(flag(ladder, "--time-limit")) <= 7200
    outs = [(call[0], flag(call, "--model"), flag(call, "--n"), flag(call, "--out"))
            for call in calls]
    models = plan.folders["MODELS"]

    def expected(command: str, model: str, n: int, results_file: str) -> tuple[str, ...]:
        name = f"cifar10-{model}-sigma0.25"
        return command, f"{models}/{name}.pt", str(n), f"{results}/{name}_{results_file}.tsv"

    assert outs == [expected("certify", "cohen", 10_000, "n10000"),
                    expected("certify", "rush", 10_000, "n10000"),
                    expected("certify", "rush", 100_000, "n100000"),
                    expected("certify-attack", "cohen", 1000, "attack"),
                    expected("certify-attack", "rush", 1000, "attack"),
                    expected("certify-audit", "cohen", 10_000, "audit"),
                    expected("certify-audit", "rush", 10_000, "audit")]
    for call in calls:
        assert 7100 < int(flag(call, "--time-limit")) <= 7200, call
    assert [flag(call, "--skip") for call in calls] == ["50", "50", "500", "50", "50", "50", "50"]


def test_n_large_0_leaves_out_the_run_at_the_larger_n(plan) -> None:
    ship(plan, "cohen", "rush")
    result, calls = plan("certify", N_LARGE="0")
    assert result.returncode == 0, result.stderr
    assert [(call[0], flag(call, "--n")) for call in calls] == [("certify", "10000")] * 2


def test_no_long_command_starts_within_a_minute_of_the_deadline(plan) -> None:
    ship(plan, "cohen", "rush")
    result, calls = plan("certify", "ladder", "adaptive", "claim", DEADLINE=in_seconds(30))
    assert result.returncode == 0, result.stderr
    # certify: each model at n = 10,000 and RUSH at 100,000; the ladder; adaptive stops at its first
    assert result.stdout.count("less than a minute before DEADLINE") == 5
    assert [call[:2] for call in calls] == [["python", "scripts/rush_claim_table.py"]]


def test_training_waits_for_its_encoder_and_skips_what_is_trained_or_shipped(plan) -> None:
    runs = plan.folders["RUNS"]
    result, calls = plan("rush", TIME_LIMIT="2h")
    assert result.returncode != 0 and "simclr-r20.pt is not trained yet" in result.stderr
    assert calls == []
    runs.mkdir(exist_ok=True)
    (runs / "simclr-r20.pt").write_text("encoder")
    result, calls = plan("simclr", "baseline", "rush", TIME_LIMIT="2h")
    assert result.returncode == 0, result.stderr
    assert [(call[0], flag(call, "--out"), flag(call, "--time-limit")) for call in calls] == [
        ("encoders-finetune", f"{runs}/cohen-r20-sigma0.25.pt", "2h"),
        ("encoders-finetune", f"{runs}/rush-r20-sigma0.25.pt", "2h")]
    assert flag(calls[1], "--encoder") == f"{runs}/simclr-r20.pt"
    ship(plan, "cohen")
    (runs / "rush-r20-sigma0.25.pt").write_text("trained")
    result, calls = plan("baseline", "rush")
    assert result.returncode == 0 and calls == []


def test_the_sequential_rows_read_each_models_certificates_once(plan) -> None:
    ship(plan, "cohen", "rush")
    results = plan.folders["DOCS"] / "results"
    results.mkdir(parents=True)
    done = results / "cifar10-cohen-sigma0.25_adaptive.md"
    done.write_text("measured before")
    result, calls = plan("adaptive")
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1 and calls[0][1] == "benchmarks/adaptive.py"
    assert flag(calls[0], "--certificates") == f"{results}/cifar10-rush-sigma0.25_n10000.tsv"
    assert (results / "cifar10-rush-sigma0.25_adaptive.md").read_text() == "stand-in output\n"
    assert done.read_text() == "measured before"


def test_unpack_brings_back_what_the_runs_folder_lacks(plan) -> None:
    training = plan.folders["DOCS"] / "training"
    training.mkdir(parents=True)
    for name in ("simclr-r20.pt", "rush-r20-sigma0.25.pt.partial",
                 "rush-consistency-r20-sigma0.25.pt.partial"):
        (training / name).write_text(f"packed {name}")
    runs = plan.folders["RUNS"]
    runs.mkdir()
    (runs / "rush-r20-sigma0.25.pt").write_text("finished here")
    result, _ = plan("unpack")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in runs.iterdir()) == [
        "rush-consistency-r20-sigma0.25.pt.partial", "rush-r20-sigma0.25.pt", "simclr-r20.pt"]
    assert (runs / "rush-r20-sigma0.25.pt").read_text() == "finished here"


@pytest.mark.parametrize("sigma, name, radii, target_radii, published", [
    ("0.25", "0.25", "0 0.25 0.5 0.75 1", "0.25 0.5 0.75", "noise0.25_sigma0.25"),
    ("0.5", "0.50", "0 0.25 0.5 0.75 1 1.25 1.5 1.75 2", "0.25 0.5 0.75 1 1.25 1.5",
     "noise0.50_sigma0.50"),
    ("1", "1.00", "0 0.25 0.5 0.75 1 1.25 1.5 1.75 2 2.25 2.5 2.75 3 3.25 3.5 3.75 4",
     "0.25 0.5 0.75 1 1.25 1.5 1.75 2 2.25 2.5 2.75 3", None),
])
def test_radii_and_names_follow_sigma_and_cohens_row_is_drawn_only_at_its_own_sigma(
        plan, sigma, name, radii, target_radii, published) -> None:
    ship(plan, "cohen", "rush", sigma=name)  # named with two decimals, as the digits models
    result, calls = plan("figure", "adaptive", SIGMA=sigma)
    assert result.returncode == 0, result.stderr
    figure, *sequential = calls
    assert figure[0] == "certify-plot" and len(sequential) == 2
    assert flag(figure, "--out").endswith(f"/certified_accuracy_sigma{name}.png")
    assert [flag(call, "--sigma") for call in sequential] == [sigma, sigma]
    assert [Path(flag(call, "--model")).name for call in sequential] == [
        f"cifar10-cohen-sigma{name}.pt", f"cifar10-rush-sigma{name}.pt"]
    files = figure[1:figure.index("--labels")]
    labels = figure[figure.index("--labels") + 1:figure.index("--radii")]
    assert len(labels) == len(files)
    cohen = [path for path in files if "cohen2019" in path]
    if published is None:
        assert cohen == [] and not any("Cohen et al." in label for label in labels)
    else:
        assert cohen == [f"tests/data/cohen2019/cifar10_resnet110_{published}.tsv"]
        assert labels[files.index(cohen[0])].startswith("Cohen et al. ResNet-110")
    assert " ".join(figure[figure.index("--radii") + 1:figure.index("--paired")]) == radii
    # The sequential modes' target radii; the adaptive mode's curve has the figure's radii.
    for call in sequential:
        assert " ".join(call[call.index("--radii") + 1:call.index("--curve-radii")]) == target_radii
        assert " ".join(call[call.index("--curve-radii") + 1:call.index("--simulate")]) == radii

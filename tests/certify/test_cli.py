"""The ``certify`` command end to end: results files, resume after SIGKILL, torn lines, refusal
to overwrite, torchrun sharding, and one-line user errors."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from certify.analysis import read_results
from certify.cli.certify import main
from certify.cli.merge import main as merge_main
from certify.cli.predict import main as predict_main
from certify.run_modes import CERTIFY_COLUMNS
from encoders.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> Path:
    """The results file of one uninterrupted single-process run with :func:`arguments`."""
    out = tmp_path_factory.mktemp("reference") / "reference.tsv"
    assert main(arguments(checkpoint, out)) == 0
    return out


def arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n0", "20", "--n", "300",
            "--batch", "100", "--skip", "40", "--device", "cpu", "--quiet",
            "--out", str(out), *extra]


def rows_without_time(path: Path) -> list[list[str]]:
    """Every row but the time column, which no two runs share."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    position = rows[0].index("time")
    return [row[:position] + row[position + 1:] for row in rows]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "certify", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_results_file_has_cohen_columns_and_a_summary(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out)) == 0
    printed = capsys.readouterr().out
    assert "certified accuracy at L2 radius" in printed and "abstain rate" in printed
    # A reader written from the column names alone, as an analysis script would.
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == list(CERTIFY_COLUMNS)
    assert [int(row["idx"]) for row in rows] == list(range(0, 360, 40))
    for row in rows:
        label, predicted, radius = int(row["label"]), int(row["predict"]), float(row["radius"])
        assert int(row["correct"]) == int(label == predicted)
        assert (predicted == -1) == (float(row["pA_lower"]) < 0.5)
        assert radius >= 0 and (predicted != -1 or radius == 0)
        assert int(row["samples"]) == 300 and 0 <= int(row["count"]) <= 300
        assert float(row["time"]) > 0
    assert len(read_results(out)) == 9


def test_same_command_resumes_and_other_command_is_refused(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out, "--max", "100")) == 0
    before = out.read_bytes()
    assert main(arguments(checkpoint, out, "--max", "100")) == 0
    assert out.read_bytes() == before  # nothing to redo, nothing rewritten
    capsys.readouterr()
    assert main(arguments(checkpoint, out, "--max", "100", "--seed", "1")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--overwrite" in error[0] and "seed" in error[0]
    assert out.read_bytes() == before
    assert main(arguments(checkpoint, out, "--max", "100", "--seed", "1", "--overwrite")) == 0
    assert out.read_bytes() != before


def test_a_retrained_checkpoint_does_not_resume_old_rows(checkpoint, tmp_path, capsys) -> None:
    model_path, out = tmp_path / "model.pt", tmp_path / "run.tsv"
    shutil.copy(checkpoint, model_path)
    assert main(arguments(model_path, out, "--max", "50")) == 0
    payload = torch.load(model_path, weights_only=True)
    payload["state_dict"] = {key: value + 0.01 if value.is_floating_point() else value
                             for key, value in payload["state_dict"].items()}
    save_checkpoint(model_path, "classifier", payload["metadata"], payload["state_dict"])
    capsys.readouterr()
    assert main(arguments(model_path, out, "--max", "50")) == 2
    assert "checkpoint_sha256" in capsys.readouterr().err


def test_torn_last_line_is_repaired(checkpoint, reference, tmp_path) -> None:
    out = tmp_path / "run.tsv"
    shutil.copy(reference, out)
    shutil.copy(reference.with_name("reference.tsv.run.json"), out.with_name("run.tsv.run.json"))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:7])  # four rows and a torn fifth
    assert main(arguments(checkpoint, out)) == 0
    assert rows_without_time(out) == rows_without_time(reference)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(checkpoint, tmp_path) -> None:
    reference, out = tmp_path / "reference.tsv", tmp_path / "killed.tsv"
    slow = ("--n", "5000", "--skip", "90")  # four images, a fraction of a second each
    assert main([*arguments(checkpoint, reference), *slow]) == 0
    process = subprocess.Popen([sys.executable, "-m", "certify",
                                *arguments(checkpoint, out), *slow], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 2:  # header and one row
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(out.read_text().splitlines()) - 1
    assert 1 <= written < 4, "the run should have been killed part-way"
    assert run_cli(*arguments(checkpoint, out), *slow).returncode == 0
    assert rows_without_time(out) == rows_without_time(reference)


@pytest.mark.slow
def test_two_torchrun_processes_write_the_single_process_file(checkpoint, reference,
                                                              tmp_path) -> None:
    out = tmp_path / "sharded.tsv"
    torchrun = Path(sys.executable).with_name("torchrun")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "certify",
         *[("--N" if arg == "--n" else arg) for arg in arguments(checkpoint, out)]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert rows_without_time(out) == rows_without_time(reference)


@pytest.mark.slow
def test_manual_shards_and_certify_merge(checkpoint, reference, tmp_path, capsys) -> None:
    out = tmp_path / "sharded.tsv"
    assert main(arguments(checkpoint, out, "--shard", "0/3")) == 0
    assert merge_main([str(out), "--shards", "3"]) == 2  # shards 1 and 2 not run yet
    assert "unfinished" in capsys.readouterr().err
    for shard in ("1/3", "2/3"):
        assert main(arguments(checkpoint, out, "--shard", shard)) == 0
    assert merge_main([str(out), "--shards", "3"]) == 0
    assert rows_without_time(out) == rows_without_time(reference)
    merged = out.read_bytes()
    assert main(arguments(checkpoint, out, "--shard", "1/3")) == 0  # rerun: nothing to redo
    assert merge_main([str(out), "--shards", "3"]) == 0
    assert out.read_bytes() == merged


@pytest.mark.parametrize("mode", [("--radius", "0.1"), ("--adaptive", "--tolerance", "0.2")])
def test_sequential_modes_record_their_samples(checkpoint, tmp_path, capsys, mode) -> None:
    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out, "--max", "200", *mode)) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 5 and all(1 <= int(row["samples"]) <= 300 for row in rows)
    assert "noise samples per image" in capsys.readouterr().out
    assert main(arguments(checkpoint, out, "--max", "200")) == 2  # other settings: refused


def test_predict_writes_cohen_predict_columns(checkpoint, tmp_path) -> None:
    out = tmp_path / "predict.tsv"
    args = arguments(checkpoint, out)
    args.remove("--n0")
    args.remove("20")
    assert predict_main(args) == 0
    header = out.read_text().splitlines()[0].split("\t")
    assert header == ["idx", "label", "predict", "correct", "time"]


def test_other_sigma_than_training_warns(checkpoint, tmp_path, capsys) -> None:
    args = arguments(checkpoint, tmp_path / "run.tsv", "--max", "1")
    args[args.index("--sigma") + 1] = "0.5"
    assert main(args) == 0
    assert "trained at sigma 0.25" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("--sigma", "-1"), "--sigma"),
        (("--sigma", "abc"), "--sigma"),
        (("--alpha", "1.5"), "--alpha"),
        (("--n", "0"), "--n"),
        (("--batch", "0"), "--batch"),
        (("--shard", "2/2"), "--shard"),
        (("--model", "missing.pt"), "missing.pt"),
        (("--model", "DAMAGED"), "damaged or not a torch file"),
        (("--dataset", "cifar10", "--data-root", "EMPTY"), "cifar"),
        (("--out", "FILE/run.tsv"), "file"),
        (("--split", "validation"), "--split"),
    ],
)
def test_user_errors_exit_2_with_one_line(checkpoint, tmp_path, capsys, change, needle) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    replacements = {"DAMAGED": str(damaged), "EMPTY": str(tmp_path / "empty"),
                    "FILE/run.tsv": str(tmp_path / "file" / "run.tsv")}
    change = [replacements.get(value, value) for value in change]
    args = arguments(checkpoint, tmp_path / "run.tsv")
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    with pytest.raises(SystemExit) as raised:
        raise SystemExit(main(args))
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert needle in error[0]
    assert "Traceback" not in error[0]


def test_cuda_without_gpu_is_a_user_error(checkpoint, tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(arguments(checkpoint, tmp_path / "run.tsv", "--device", "cuda")) == 2
    assert "cuda" in capsys.readouterr().err


def test_certify_reads_a_cohen_checkpoint_and_names_the_results_after_its_folders(
        tmp_path, monkeypatch, capsys) -> None:
    """`--model .../noise_0.25/checkpoint.pth.tar` in Cohen et al.'s format certifies CIFAR-10."""
    from data_formats import write_cifar

    from encoders.published import cohen_classifier

    write_cifar(tmp_path / "data", "cifar10", per_file=2)
    release = tmp_path / "models" / "resnet20" / "noise_0.25"
    release.mkdir(parents=True)
    torch.manual_seed(0)
    network = cohen_classifier("cifar_resnet20")
    torch.save({"arch": "cifar_resnet20", "state_dict": network.state_dict(), "epoch": 90},
               release / "checkpoint.pth.tar")
    monkeypatch.chdir(tmp_path)
    assert main(["--model", str(release / "checkpoint.pth.tar"), "--dataset", "cifar10",
                 "--data-root", "data", "--sigma", "0.25", "--n0", "10", "--n", "40",
                 "--batch", "40", "--max", "2", "--device", "cpu", "--quiet"]) == 0
    out = tmp_path / "results" / "resnet20_noise_0.25_cifar10-test_sigma0.25_n40.tsv"
    assert len(read_results(out)) == 2, capsys.readouterr().err


def test_a_model_that_does_not_name_its_data_set_needs_dataset(tmp_path, capsys) -> None:
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    scripted.save(str(tmp_path / "model.ts"))
    assert main(["--model", str(tmp_path / "model.ts"), "--sigma", "0.25", "--device", "cpu",
                 "--out", str(tmp_path / "r.tsv")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--dataset" in error[0] and "model.ts" in error[0]


def test_rule_flag_chooses_the_sequential_rule_and_is_recorded(checkpoint, tmp_path) -> None:
    import json

    from certify.results import settings_path

    samples = {}
    for rule in ("betting", "clopper-pearson"):
        out = tmp_path / f"{rule}.tsv"
        assert main(arguments(checkpoint, out, "--radius", "0.1", "--rule", rule)) == 0
        assert json.loads(settings_path(out).read_text())["rule"] == rule
        samples[rule] = [int(n) for n in read_results(out).extra["samples"]]
    assert all(1 <= n <= 300 for counts in samples.values() for n in counts)

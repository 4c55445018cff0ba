"""Faults and hostile input: never a certificate for a broken model, never a lost results file,
one line and exit status 2 (130 for Ctrl-C) for every user error.

The library's and the data's own faults are tested in tests/encoders/test_checkpoint_faults.py,
test_data_faults.py and test_training_faults.py.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from command_output import one_line_error

from certify.cli.attack import main as attack_main
from certify.cli.audit import main as audit_main
from certify.cli.certify import main
from certify.cli.finetune import main as finetune_main
from certify.cli.merge import main as merge_main
from certify.cli.plot import main as plot_main
from certify.cli.predict import main as predict_main
from certify.results import ResultsFile, read_rows, settings_path
from certify.run_modes import CERTIFY_COLUMNS
from certify.sampling import sample_counts
from certify.shards import completion_path, part_path
from certify.smoothing import Smooth, certify, predict
from encoders.backbones import build_classifier
from encoders.checkpoint import save_checkpoint, versions

REPO = Path(__file__).resolve().parents[2]


def arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    """A small certify run: images 0, 40, ..., 320 of the digits test split."""
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n0", "20", "--n", "300",
            "--batch", "100", "--skip", "40", "--device", "cpu", "--quiet",
            "--out", str(out), *extra]


def attack_arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n", "100", "--batch", "100",
            "--steps", "1", "--eot-samples", "2", "--linf-eps", "--l2-eps", "0.5",
            "--skip", "180", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def audit_arguments(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--sigma", "0.25", "--n0", "20", "--n", "200",
            "--predict-n", "100", "--batch", "200", "--steps", "1", "--eot-samples", "2",
            "--skip", "180", "--device", "cpu", "--quiet", "--out", str(out), *extra]


COMMANDS = {"certify": (main, arguments), "certify-attack": (attack_main, attack_arguments),
            "certify-audit": (audit_main, audit_arguments)}


def exit_status(entry, argv: list[str]) -> int:
    """The status a console script would exit with (argparse exits by raising SystemExit)."""
    try:
        return entry(argv)
    except SystemExit as stop:
        return int(stop.code)


def rows_without_time(path: Path) -> list[list[str]]:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    position = lines[0].index("time")
    return [fields[:position] + fields[position + 1:] for fields in lines]


def save_classifier(path: Path, input_shape=(1, 8, 8), num_classes=10, scale: float = 1.0,
                    seed: int = 0) -> Path:
    """A small_cnn checkpoint with random weights, every floating tensor multiplied by scale."""
    torch.manual_seed(seed)
    model = build_classifier("small_cnn", num_classes, input_shape, [0.3] * input_shape[0],
                             [0.4] * input_shape[0])
    state = {key: value * scale if value.is_floating_point() else value
             for key, value in model.state_dict().items()}
    metadata = {"architecture": "small_cnn", "dataset": "digits", "sigma": 0.25,
                "num_classes": num_classes, "input_shape": list(input_shape),
                "recipe": {"test": True}, "versions": versions()}
    save_checkpoint(path, "classifier", metadata, state)
    return path


def write_mnist(root: Path, images: int = 4) -> None:
    """MNIST's IDX files (28x28, ten classes) in root/mnist."""
    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        for kind, array in (("images-idx3", rng.integers(0, 256, (images, 28, 28))),
                            ("labels-idx1", rng.integers(0, 10, images))):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(size).to_bytes(4, "big") for size in array.shape)
            data = header + array.astype(np.uint8).tobytes()
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(data)


def write_cifar10(root: Path, images: int = 2) -> None:
    """CIFAR-10's python-version batches (3x32x32, ten classes) in root/cifar-10-batches-py."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
                 b"labels": [int(label) for label in rng.integers(0, 10, images)]}
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))


def flip_a_weight_byte(checkpoint: Path, damaged: Path) -> None:
    """Copy checkpoint to damaged with one bit flipped inside the stored bytes of a weight."""
    weight = torch.load(checkpoint, weights_only=True)["state_dict"]["head.weight"]
    data = bytearray(checkpoint.read_bytes())
    start = bytes(data).find(weight.numpy().tobytes())
    assert start > 0, "the weight's bytes are stored verbatim in the zip"
    data[start + 17] ^= 0x04
    damaged.write_bytes(bytes(data))


# Non-finite logits gave certificates.

class NonFiniteAfter(torch.nn.Module):
    """Ten-class logits voting for class 3, with logit 5 set to ``value`` from call ``first`` on."""

    def __init__(self, value: float, first: int) -> None:
        super().__init__()
        self.value, self.first, self.calls = value, first, 0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(batch), 10)
        logits[:, 3] = 1.0
        if self.calls >= self.first:
            logits[:, 5] = self.value
        self.calls += 1
        return logits


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("first", [0, 2])
def test_non_finite_logits_are_a_value_error(value, first) -> None:
    x = torch.rand(1, 8, 8)
    calls = [
        lambda model: certify(model, x, 0.25, 100, 500, 0.001, 100),
        lambda model: predict(model, x, 0.25, 500, 0.001, 100),
        lambda model: Smooth(model, 10, 0.25).certify(x, 100, 500, 0.001, 100),
        lambda model: certify(model, x, 0.25, 100, 500, 0.001, 100, radius=0.1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="finite"):
            call(NonFiniteAfter(value, first))


@pytest.mark.parametrize("scale", [float("nan"), 1e38])  # NaN weights; finite weights, inf logits
@pytest.mark.parametrize("entry", [main, predict_main])
def test_commands_refuse_a_model_with_non_finite_output(tmp_path, capsys, scale,
                                                               entry) -> None:
    model = save_classifier(tmp_path / "broken.pt", scale=scale)
    out = tmp_path / "run.tsv"
    argv = arguments(model, out)
    if entry is predict_main:
        argv = argv[:argv.index("--n0")] + argv[argv.index("--n0") + 2:]
    assert exit_status(entry, argv) == 2
    assert "finite" in one_line_error(capsys)
    assert not out.exists() or len(read_rows(out)) == 0


# A checkpoint with flipped bytes in its weights; a model whose input shape or number of classes
# is not the data's. "The audit, attack and certify commands
# refuse foreign or damaged inputs with one line naming the file and what is wrong."

@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("fault", ["flipped-byte", "mnist", "cifar10", "classes"])
def test_commands_refuse_damaged_or_foreign_models(checkpoint, tmp_path, capsys,
                                                                 command, fault) -> None:
    entry, make_arguments = COMMANDS[command]
    model, extra = tmp_path / "model.pt", []
    if fault == "flipped-byte":
        flip_a_weight_byte(checkpoint, model)
        words = ["model.pt", "damaged"]
    elif fault == "classes":
        save_classifier(model, input_shape=(1, 28, 28), num_classes=100)
        write_mnist(tmp_path)
        extra = ["--dataset", "mnist", "--data-root", str(tmp_path)]
        words = ["model.pt", "100 classes", "mnist", "10"]
    else:
        model = checkpoint
        (write_mnist if fault == "mnist" else write_cifar10)(tmp_path)
        extra = ["--dataset", fault, "--data-root", str(tmp_path)]
        shape = "(1, 28, 28)" if fault == "mnist" else "(3, 32, 32)"
        words = [checkpoint.name, "(1, 8, 8)", fault, shape]
    out = tmp_path / "run.tsv"
    assert exit_status(entry, make_arguments(model, out, *extra)) == 2
    error = one_line_error(capsys)
    for word in words:
        assert word in error
    assert not out.exists()


# certify-audit accepted certificates made on another split, model or data set.

@pytest.mark.parametrize("change", ["split", "model", "predict"])
def test_audit_refuses_certificates_of_other_settings(checkpoint, tmp_path, capsys,
                                                             change) -> None:
    certificates = tmp_path / "certificates.tsv"
    certify_argv = arguments(checkpoint, certificates, "--max", "100")
    if change == "predict":
        certify_argv = certify_argv[:certify_argv.index("--n0")] + certify_argv[
            certify_argv.index("--n0") + 2:]
    assert (predict_main if change == "predict" else main)(certify_argv) == 0
    model = checkpoint
    extra = ["--certificates", str(certificates)]
    if change == "split":
        extra += ["--split", "train"]
    if change == "model":
        model = save_classifier(tmp_path / "other.pt", seed=1)
    capsys.readouterr()
    out = tmp_path / "audit.tsv"
    assert exit_status(audit_main, audit_arguments(model, out, *extra)) == 2
    error = one_line_error(capsys)
    assert "certificates.tsv" in error
    assert {"split": "split", "model": "checkpoint", "predict": "certify-predict"}[change] in error
    assert not out.exists()


# A shard marker left by an earlier run made certify-merge join a part lacking rows.

def test_overwrite_clears_the_shard_marker_of_the_earlier_run(checkpoint, tmp_path,
                                                                     capsys, monkeypatch) -> None:
    import certify.run_modes as modes

    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out, "--max", "100", "--shard", "0/2")) == 0  # 0, 80
    made = modes.Certify.rows

    def interrupted_after_two(*args, **kwargs):
        if interrupted_after_two.calls == 2:
            raise KeyboardInterrupt
        interrupted_after_two.calls += 1
        return made(*args, **kwargs)

    interrupted_after_two.calls = 0
    monkeypatch.setattr(modes.Certify, "rows", interrupted_after_two)
    # --max 200 selects 0, 40, ..., 160; shard 0 of 2 takes 0, 80, 160 and stops after two.
    assert main(arguments(checkpoint, out, "--max", "200", "--shard", "0/2", "--overwrite")) == 130
    monkeypatch.setattr(modes.Certify, "rows", made)
    assert main(arguments(checkpoint, out, "--max", "200", "--shard", "1/2", "--overwrite")) == 0
    capsys.readouterr()
    assert merge_main([str(out), "--shards", "2"]) == 2
    assert "rerun shard 0/2" in one_line_error(capsys)
    assert not out.exists()


def test_merge_joins_exactly_the_selected_images(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "run.tsv"
    for shard in ("0/2", "1/2"):
        assert main(arguments(checkpoint, out, "--max", "200", "--shard", shard)) == 0
    part = part_path(out, 0, 2)
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:-1]))  # the row of image 160 is gone
    capsys.readouterr()
    assert merge_main([str(out), "--shards", "2"]) == 2
    error = one_line_error(capsys)
    assert "160" in error and str(part) in error
    part.write_text("".join([*lines, lines[1]]))  # every row, one twice
    assert merge_main([str(out), "--shards", "2"]) == 2
    assert "twice" in one_line_error(capsys)
    assert not out.exists()


# certify --out r.png --plot drew the figure over the results file.

def test_the_figure_never_replaces_the_results_file(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "r.png"
    assert main(arguments(checkpoint, out, "--max", "100", "--plot")) == 0
    assert out.read_text().splitlines()[0].split("\t") == list(CERTIFY_COLUMNS)
    assert len(read_rows(out)) == 3
    figures = [path for path in tmp_path.iterdir() if path.read_bytes()[:4] == b"\x89PNG"]
    assert len(figures) == 1 and figures[0] != out
    assert str(figures[0]) in capsys.readouterr().out


# Two runs on one --out interleaved their rows, and reruns then failed forever.

HOLD_LOCK = """
import sys, time
from certify.results import ResultsFile
with ResultsFile(sys.argv[1], ("idx", "label"), {"holder": True}):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_the_same_out_exits_2_naming_the_first(checkpoint, tmp_path,
                                                                      capsys) -> None:
    out = tmp_path / "run.tsv"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = out.read_bytes()
        assert main(arguments(checkpoint, out, "--overwrite")) == 2
        error = one_line_error(capsys)
        assert str(out) in error and f"pid {holder.pid}" in error
        assert out.read_bytes() == before
    finally:
        holder.kill()  # the lock dies with its process
        holder.wait()
    assert main(arguments(checkpoint, out, "--overwrite", "--max", "100")) == 0
    assert len(read_rows(out)) == 3


def test_the_lock_is_held_within_one_process_too(tmp_path) -> None:
    path = tmp_path / "run.tsv"
    with ResultsFile(path, ("idx", "label"), {"a": 1}):
        with pytest.raises(ValueError, match=f"in use.*pid {os.getpid()}"):
            ResultsFile(path, ("idx", "label"), {"a": 1})
    with ResultsFile(path, ("idx", "label"), {"a": 1}) as results:  # released on close
        assert results.done == set()


def test_a_rerun_repairs_duplicated_and_invalid_rows(checkpoint, tmp_path,
                                                            capsys) -> None:
    reference, out = tmp_path / "reference.tsv", tmp_path / "run.tsv"
    assert main(arguments(checkpoint, reference, "--max", "200")) == 0
    assert main(arguments(checkpoint, out, "--max", "200")) == 0
    header, *rows = out.read_text().splitlines(keepends=True)
    # Two runs interleaved (every row twice), a row with a field missing, a line of garbage.
    damaged = [header, *(row for pair in zip(rows, rows) for row in pair)]
    damaged[3] = "\t".join(damaged[3].split("\t")[:-2]) + "\n"
    damaged.insert(6, "garbage\tline\n")
    out.write_text("".join(damaged))
    assert main(arguments(checkpoint, out, "--max", "200")) == 0
    assert rows_without_time(out) == rows_without_time(reference)
    assert "repaired" in capsys.readouterr().err


def test_repair_keeps_one_row_per_key(tmp_path) -> None:
    path = tmp_path / "attack.tsv"
    columns, key = ("idx", "attack", "correct"), ("idx", "attack")
    with ResultsFile(path, columns, {"a": 1}, key=key) as results:
        for row in [(0, "clean", 1), (0, "pgd", 0), (1, "clean", 1)]:
            results.append(row)
    text = path.read_text()
    rows_again, short_row = "".join(text.splitlines(keepends=True)[1:]), "1\n"
    path.write_text(text + rows_again + short_row)
    with ResultsFile(path, columns, {"a": 1}, key=key) as results:
        assert results.done == {0, 1} and results.dropped == 4
    assert path.read_text() == text


# --overwrite replaced anything at --out, FIFOs and devices included.

def test_what_is_not_a_regular_file_is_never_replaced(checkpoint, tmp_path,
                                                             capsys) -> None:
    fifo = tmp_path / "fifo.tsv"
    os.mkfifo(fifo)
    for extra in ([], ["--overwrite"]):
        assert main(arguments(checkpoint, fifo, *extra)) == 2
        error = one_line_error(capsys)
        assert str(fifo) in error and "not a regular file" in error
        assert fifo.is_fifo()
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    assert main(arguments(checkpoint, folder, "--overwrite")) == 2
    assert "folder" in one_line_error(capsys) and folder.is_dir()


# A training command whose --out cannot be written trained first, then lost the weights.

def test_training_checks_its_out_before_training(tmp_path, capsys, monkeypatch) -> None:
    import encoders.loop

    def no_training(*args, **kwargs):
        raise AssertionError("the data were loaded before --out was checked")

    monkeypatch.setattr(encoders.loop, "load_training_split", no_training)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "model.pt"
    assert finetune_main(["--sigma", "0.25", "--out", str(out), "--device", "cpu"]) == 2
    error = one_line_error(capsys)
    assert str(tmp_path / "file") in error and "not a folder" in error


# Tracebacks where one line is owed.

@pytest.mark.parametrize("fault", ["two-bytes", "empty-input-shape"])
def test_malformed_checkpoints_are_one_line(tmp_path, capsys, fault) -> None:
    model = tmp_path / "model.pt"
    if fault == "two-bytes":
        model.write_bytes(b"q\xff")
    else:
        save_classifier(model)
        payload = torch.load(model, weights_only=True)
        payload["metadata"]["input_shape"] = []
        payload.pop("sha256", None)
        torch.save(payload, model)
    assert main(arguments(model, tmp_path / "run.tsv")) == 2
    error = one_line_error(capsys)
    assert "model.pt" in error
    assert ("damaged" if fault == "two-bytes" else "input_shape") in error


def sharded_run(checkpoint: Path, out: Path) -> None:
    for shard in ("0/2", "1/2"):
        assert main(arguments(checkpoint, out, "--max", "100", "--shard", shard)) == 0


@pytest.mark.parametrize(
    ("file", "text"),
    [("marker", "garbage"), ("marker", "[]"), ("marker", '{"rows": 1}'),
     ("settings", "garbage"), ("settings", "[]"), ("settings", '{"sigma": 0.25}'),
     ("part", "")],
)
def test_malformed_shard_markers_and_parts_are_one_line(checkpoint, tmp_path, capsys,
                                                                file, text) -> None:
    out = tmp_path / "run.tsv"
    sharded_run(checkpoint, out)
    part = part_path(out, 1, 2)
    damaged = {"marker": completion_path(part), "settings": settings_path(part),
               "part": part}[file]
    damaged.write_text(text)
    capsys.readouterr()
    assert merge_main([str(out), "--shards", "2"]) == 2
    assert str(damaged) in one_line_error(capsys)
    assert not out.exists()


def test_settings_without_batch_are_one_line(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out, "--max", "100")) == 0
    recorded = json.loads(settings_path(out).read_text())
    del recorded["batch"]
    settings_path(out).write_text(json.dumps(recorded))
    argv = arguments(checkpoint, out, "--max", "100")
    del argv[argv.index("--batch"):argv.index("--batch") + 2]
    capsys.readouterr()
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert str(out) in error and "batch" in error


@pytest.mark.parametrize(
    ("entry", "argv", "words"),
    [
        (main, ["--device", "mps"], ["device", "mps"]),
        (main, ["--device", "meta"], ["device", "meta"]),
        (attack_main, ["--l2-eps", "1e400"], ["--l2-eps", "1e400"]),
        (plot_main, ["RESULTS", "--out", "OUT.png", "--dpi", "100000"], ["--dpi", "100000"]),
    ],
)
def test_out_of_range_flags_are_one_line(checkpoint, tmp_path, capsys, entry, argv,
                                                 words) -> None:
    results = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, results, "--max", "50")) == 0
    if entry is plot_main:
        argv = [str(results) if value == "RESULTS" else value for value in argv]
        argv = [str(tmp_path / "figure.png") if value == "OUT.png" else value for value in argv]
    else:
        argv = (arguments if entry is main else attack_arguments)(
            checkpoint, tmp_path / "other.tsv", *argv)
    capsys.readouterr()
    assert exit_status(entry, argv) == 2
    error = one_line_error(capsys)
    for word in words:
        assert word in error
    assert not (tmp_path / "figure.png").exists()


INTERRUPTED_START = """
import importlib, os, signal, sys
import certify.cli.startup as startup
assert "torch" not in sys.modules, "the entry points imported torch before their commands"
real_import = importlib.import_module

def interrupted_import(name, *args):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the command's module (and torch) load
    return real_import(name, *args)

importlib.import_module = interrupted_import
sys.argv = [ENTRY]
sys.exit(getattr(startup, ENTRY.replace("-", "_"))())
"""


def console_scripts() -> dict[str, str]:
    """The console scripts of pyproject.toml: name -> entry point."""
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


@pytest.mark.parametrize("entry", sorted(console_scripts()))
def test_ctrl_c_during_start_up_is_one_line_and_130(entry) -> None:
    assert console_scripts()[entry] == f"certify.cli.startup:{entry.replace('-', '_')}"
    interrupted = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_START.replace("ENTRY", repr(entry))], cwd=REPO,
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    lines = interrupted.stderr.strip().splitlines()
    assert lines == [f"{entry}: interrupted while starting; nothing was written"], lines


IMPORT_EVERY_COMMAND = """
import importlib.util, pkgutil, signal
handlers = {name: signal.getsignal(name) for name in (signal.SIGINT, signal.SIGTERM)}
folder = importlib.util.find_spec("certify.cli").submodule_search_locations
modules = ["certify.cli", *(module.name for module in pkgutil.iter_modules(folder, "certify.cli."))]
for name in [*modules, "certify.runner", "encoders"]:
    importlib.import_module(name)
changed = [name for name, handler in handlers.items() if signal.getsignal(name) is not handler]
print(len(modules), changed)
"""


def test_importing_every_command_changes_no_signal_handler() -> None:
    imported = subprocess.run([sys.executable, "-c", IMPORT_EVERY_COMMAND], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert imported.returncode == 0, imported.stderr[-2000:]
    count, changed = imported.stdout.split(" ", 1)
    assert int(count) >= 10 and changed.strip() == "[]", imported.stdout


def test_ctrl_c_while_python_m_certify_starts_is_one_line_and_130(tmp_path) -> None:
    started = subprocess.Popen([sys.executable, "-m", "certify", "--sigma", "0.25", "--device",
                                "cpu", "--out", str(tmp_path / "run.tsv")], cwd=REPO,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # importing torch, loading the model, or certifying: each ends alike
    started.send_signal(signal.SIGINT)
    _, error = started.communicate(timeout=120)
    assert started.returncode == 130, error[-2000:]
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0], lines


# --n 1000000000000 allocated every vote at once.

class StopSampling(Exception):
    pass


def test_memory_does_not_grow_with_n(tiny_cnn) -> None:
    calls = []

    def forward_then_stop(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        if len(calls) == 3:
            raise StopSampling
        return tiny_cnn(batch)

    model = torch.nn.Module()
    model.forward = forward_then_stop
    with pytest.raises(StopSampling):  # the vote counter did not ask for 8 TB first
        sample_counts(model, torch.rand(1, 8, 8), 0.25, 10**12, 100)
    assert calls == [100, 100, 100]


def test_counts_are_the_votes_of_every_sample(tiny_cnn) -> None:
    x = torch.rand(1, 8, 8)
    generator = torch.Generator().manual_seed(5)
    counts = sample_counts(tiny_cnn, x, 0.5, 1234, 100, torch.Generator().manual_seed(5))
    votes = []
    for size in [100] * 12 + [34]:
        noise = torch.randn((size, 1, 8, 8), generator=generator)
        votes.append(tiny_cnn(noise * 0.5 + x).argmax(1))
    assert torch.equal(counts, torch.bincount(torch.cat(votes), minlength=10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_per_batch(tiny_cnn) -> None:
    model, x = tiny_cnn.cuda(), torch.rand(1, 8, 8, device="cuda")

    def synchronisations(num: int) -> int:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sample_counts(model, x, 0.25, num, 100)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(warning.message) for warning in caught)

    assert synchronisations(2_000) == synchronisations(200)  # 20 batches sync as often as 2


# Messages that did not say what is wrong.

@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("--seed", "-1"), ["--seed", "-1"]),
        (("--out", ""), ["--out", "''"]),
        (("--out", "FILE/run.tsv"), ["FILE", "is a file, not a folder"]),
    ],
)
def test_messages_say_what_is_wrong(checkpoint, tmp_path, capsys, change, words) -> None:
    (tmp_path / "file").write_text("x")
    flag, value = change
    value = value.replace("FILE", str(tmp_path / "file"))
    words = [word.replace("FILE", str(tmp_path / "file")) for word in words]
    argv = arguments(checkpoint, tmp_path / "run.tsv")
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert exit_status(main, argv) == 2
    error = one_line_error(capsys)
    assert "Errno" not in error
    for word in words:
        assert word in error


def test_an_unreadable_settings_file_is_named(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "run.tsv"
    assert main(arguments(checkpoint, out, "--max", "50")) == 0
    settings_path(out).write_text("{not json")
    argv = arguments(checkpoint, out, "--max", "50")
    del argv[argv.index("--batch"):argv.index("--batch") + 2]  # the batch is read from it
    capsys.readouterr()
    assert main(argv) == 2
    assert str(settings_path(out).name) in one_line_error(capsys)

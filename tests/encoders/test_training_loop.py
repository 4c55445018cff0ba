"""The checkpoint convention of the training loop, one for pre-training and noise training: the
unfinished run in ``<out>.partial``, the finished one renamed to ``out`` and never overwritten, an
unfinished pre-training run left at ``out`` by earlier versions refused with the rename that
resumes it; and both commands stopped and resumed under torchrun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from certify.cli.pretrain import main as pretrain_main
from encoders import loop
from encoders.checkpoint import load_checkpoint
from encoders.data import ImageDataset, load_dataset
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[2]
STAGES = pytest.mark.parametrize("stage", ["pretrain", "finetune"])


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    """The first 96 digits training images: three steps of 32 an epoch."""
    train = load_dataset("digits", "train")
    return ImageDataset(train.images[:96], train.labels[:96], train.num_classes)


def _train(stage: str, out: Path, train: ImageDataset, **arguments) -> Path:
    """Two epochs of the stage's training on ``train``."""
    if stage == "pretrain":
        config = PretrainConfig(dataset="digits", out=str(out), epochs=2, batch_size=32,
                                device="cpu")
        return pretrain(config, train=train, **arguments)
    config = FinetuneConfig(sigma=0.25, out=str(out), epochs=2, batch_size=32, device="cpu")
    return finetune(config, train=train, **arguments)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, kind=None)["state_dict"]


@STAGES
def test_the_unfinished_run_is_in_partial_and_the_finished_one_in_out(tmp_path, small_digits,
                                                                      stage):
    out, partial = tmp_path / "model.pt", loop.partial_path(tmp_path / "model.pt")
    seen = []

    def look(epochs: int) -> bool:
        state = load_checkpoint(partial, kind=None)["training_state"]
        seen.append((epochs, out.exists(), state["epoch"], "optimizer" in state))
        return False

    assert _train(stage, out, small_digits, should_stop=look) == out
    assert seen == [(1, False, 1, True)]  # not asked after the last epoch, which finishes the run
    assert not partial.exists()
    state = load_checkpoint(out, kind=None)["training_state"]
    assert state["epoch"] == 2 and len(state["history"]) == 2 and "optimizer" not in state


@STAGES
def test_a_finished_run_is_never_overwritten(tmp_path, small_digits, stage):
    out = _train(stage, tmp_path / "model.pt", small_digits)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="model.pt exists; remove it or choose another `out`"):
        _train(stage, out, small_digits)
    assert out.read_bytes() == before and not loop.partial_path(out).exists()


@STAGES
def test_a_last_epoch_saved_but_not_renamed_is_renamed_without_training(tmp_path, small_digits,
                                                                        stage, monkeypatch):
    out = _train(stage, tmp_path / "model.pt", small_digits)
    partial = loop.partial_path(out)
    out.rename(partial)  # as if the run died between saving its last epoch and the rename
    inode = partial.stat().st_ino
    monkeypatch.setattr(loop, "save_checkpoint", lambda *args: pytest.fail("trained again"))
    assert _train(stage, out, small_digits) == out
    assert out.stat().st_ino == inode and not partial.exists()


def test_an_unfinished_pretraining_run_left_at_out_is_refused_until_renamed(tmp_path,
                                                                           small_digits, capsys):
    """Earlier versions saved an unfinished pre-training run at ``out`` itself, in the file that
    is now ``<out>.partial``: the same command must neither take it for finished nor overwrite
    it, and resumes it once it is renamed."""
    config = PretrainConfig(dataset="digits", out=str(tmp_path / "simclr.pt"), epochs=2,
                            batch_size=32, device="cpu")
    out, partial = Path(config.out), config.partial_path
    pretrain(config, should_stop=lambda epochs: True, train=small_digits).rename(out)
    before = out.read_bytes()
    message = rf"epoch 1 of 2.*rename it to {re.escape(str(partial))} and rerun"
    with pytest.raises(ValueError, match=message):
        pretrain(config, train=small_digits)
    assert pretrain_main(["--out", str(out), "--device", "cpu"]) == 2  # any flags: refused first
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0])
    assert out.read_bytes() == before and not partial.exists()

    out.rename(partial)
    assert pretrain(config, train=small_digits) == out
    straight = pretrain(replace(config, out=str(tmp_path / "straight.pt")), train=small_digits)
    resumed, whole = _weights(out), _weights(straight)
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def _torchrun(stage: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", f"certify.cli.{stage}", "--epochs", "2", "--batch-size", "64",
               "--device", "cpu", "--out", str(out), *extra]
    if stage == "finetune":
        command += ["--sigma", "0.25"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=environment)


@pytest.mark.slow
@STAGES
def test_torchrun_stops_and_resumes_both_stages(tmp_path, stage):
    out = tmp_path / "model.pt"
    stopped = _torchrun(stage, out, "--time-limit", "0.001")  # stops after the first epoch
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert stopped.stdout.count("stopped after epoch 1 of 2") == 1  # the first process reports
    partial = load_checkpoint(loop.partial_path(out), kind=None)
    assert partial["training_state"]["epoch"] == 1 and not out.exists()
    resumed = _torchrun(stage, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.count(f"wrote {out}") == 1
    finished = load_checkpoint(out, kind=None)
    assert finished["metadata"]["recipe"]["world_size"] == 2
    history = finished["training_state"]["history"]
    assert len(history) == 2 and all(0 < value < 10 for value in history)
    assert not loop.partial_path(out).exists()

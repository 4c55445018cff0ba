"""The training commands stop cleanly at an epoch boundary, on ``--time-limit`` or SIGTERM, and the
same command resumes the run to the weights of an uninterrupted one."""

from __future__ import annotations

import argparse
import os
import signal

import pytest
import torch

import certify.cli.finetune as finetune_command
import encoders.finetune as finetune_module
import encoders.loop
from certify.cli import training
from certify.cli.common import duration
from certify.cli.finetune import main as finetune_main
from encoders.checkpoint import load_checkpoint
from encoders.data import ImageDataset, load_dataset
from encoders.finetune import FinetuneConfig, finetune


@pytest.fixture
def small_digits(monkeypatch) -> ImageDataset:
    """The first 96 digits training images, which the training loop loads instead of the split."""
    train = load_dataset("digits", "train")
    small = ImageDataset(train.images[:96], train.labels[:96], train.num_classes)
    monkeypatch.setattr(encoders.loop, "load_training_split", lambda name, root=None: small)
    return small


def _command(out, *extra: str) -> list[str]:
    return ["--sigma", "0.25", "--out", str(out), "--epochs", "3", "--batch-size", "32",
            "--device", "cpu", "--optimizer", "momentum", "--lr", "0.05", *extra]


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, kind="classifier")["state_dict"]


def test_time_limit_stops_after_an_epoch_and_the_same_command_resumes(tmp_path, small_digits,
                                                                     capsys):
    out = tmp_path / "model.pt"
    # The first epoch always runs; a limit shorter than it stops the run right after it.
    assert finetune_main(_command(out, "--time-limit", "0.001")) == 0
    printed = capsys.readouterr()
    assert "stopped after epoch 1 of 3 (--time-limit" in printed.out
    assert "epoch 1/3:" in printed.err and "ETA" in printed.err
    partial = load_checkpoint(f"{out}.partial", kind="classifier")
    assert partial["training_state"]["epoch"] == 1 and not out.exists()

    assert finetune_main(_command(out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    uninterrupted = finetune(FinetuneConfig(
        sigma=0.25, out=str(tmp_path / "whole.pt"), epochs=3, batch_size=32, device="cpu",
        optimizer="momentum", lr=0.05), train=small_digits)
    resumed, whole = _weights(out), _weights(uninterrupted)
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def test_sigterm_stops_at_the_next_epoch_boundary_and_restores_the_handler(tmp_path, small_digits,
                                                                          monkeypatch, capsys):
    real_step = finetune_module.noise_step
    steps = []

    def step_then_terminate(*args, **kwargs):
        steps.append(1)
        if len(steps) == 1:  # in the middle of the first epoch, as SLURM would
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "noise_step", step_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "model.pt"
    assert finetune_main(_command(out)) == 0
    assert "stopped after epoch 1 of 3 (SIGTERM)" in capsys.readouterr().out
    assert len(steps) == 3  # the first epoch (96 images, batch 32) was finished, no more
    assert load_checkpoint(f"{out}.partial", kind="classifier")["training_state"]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_time_limit_stops_before_an_epoch_that_would_overrun(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: now[0])
    with training.EpochClock(epochs=10, time_limit=35.0) as clock:
        answers = []
        for epoch in range(1, 5):
            now[0] += 10.0  # every epoch takes 10 s
            answers.append(clock(epoch))
    # After 2 epochs (20 s) a third fits in 35 s; after 3 (30 s) a fourth would end at 40 s.
    assert answers == [False, False, True, True]
    assert clock.stop_reason == "--time-limit 0:00:35"
    assert "epoch 3/10: 0:00:10 this epoch, 0:00:30 elapsed, ETA 0:01:10" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("45m", 2700.0),
                                           ("5.5h", 19800.0), ("2d", 172800.0), ("1.5H", 5400.0)])
def test_durations_are_read_in_seconds_or_with_a_unit(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1h", "h", "", "inf", "nan", "5x", "1e400"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        duration(text)


def test_training_commands_spell_data_root_and_batch_as_the_certify_commands(monkeypatch):
    seen = []
    monkeypatch.setattr(finetune_command, "finetune",
                        lambda config, progress=False, should_stop=None: seen.append(config)
                        or config.partial_path)
    for flags in (["--data-root", "d", "--batch", "64"], ["--root", "d", "--batch-size", "64"]):
        assert finetune_main(["--sigma", "0.25", "--out", "x.pt", *flags]) == 0
    assert [(config.root, config.batch_size) for config in seen] == [("d", 64), ("d", 64)]

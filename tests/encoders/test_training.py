"""encoders-pretrain and encoders-finetune on small data: resuming, torchrun, frozen encoders,
CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import encoders
from certify.cli.finetune import main as finetune_main
from certify.cli.pretrain import main as pretrain_main
from encoders import loop as loop_module
from encoders.checkpoint import load_checkpoint
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[2]


def _config(out: Path, **changes) -> PretrainConfig:
    settings = {
        "dataset": "digits",
        "out": str(out),
        "epochs": 2,
        "batch_size": 256,
        "device": "cpu",
    }
    return PretrainConfig(**{**settings, **changes})


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    straight = pretrain(_config(tmp_path / "straight.pt"))
    real_save = loop_module.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise _Crash  # the process dies right after the first epoch's checkpoint

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_crash)
    with pytest.raises(_Crash):
        pretrain(_config(tmp_path / "resumed.pt"))
    assert not (tmp_path / "resumed.pt").exists()
    partial = load_checkpoint(tmp_path / "resumed.pt.partial", kind="simclr")
    assert partial["training_state"]["epoch"] == 1
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    resumed = pretrain(_config(tmp_path / "resumed.pt"))
    a, b = load_checkpoint(straight, kind="simclr"), load_checkpoint(resumed, kind="simclr")
    assert b["training_state"]["epoch"] == 2
    assert a["training_state"]["history"] == b["training_state"]["history"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_resuming_with_another_recipe_is_refused(tmp_path):
    out = tmp_path / "run.pt"
    pretrain(_config(out), should_stop=lambda epochs: True)
    with pytest.raises(ValueError, match="another recipe"):
        pretrain(_config(out, temperature=0.2))


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp.pt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "certify.cli.pretrain",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = load_checkpoint(out, kind="simclr")
    assert payload["metadata"]["recipe"]["world_size"] == 2
    (loss,) = payload["training_state"]["history"]
    # 11 steps of 128 images from random weights: the loss lies between the perfect-match value 0
    # and the uniform value log(2 * 128 - 1) = 5.54 reached by embeddings that are all equal
    assert 0 < loss < 5.6


@pytest.fixture(scope="module")
def simclr_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("simclr") / "digits.pt"
    return pretrain(PretrainConfig(dataset="digits", out=str(out), epochs=1, device="cpu"))


def test_linear_mode_trains_only_the_head(simclr_checkpoint, tmp_path):
    out = finetune(
        FinetuneConfig(
            sigma=0.25,
            out=str(tmp_path / "linear.pt"),
            encoder=str(simclr_checkpoint),
            mode="linear",
            epochs=1,
            device="cpu",
        )
    )
    before = load_checkpoint(simclr_checkpoint, kind="simclr")["state_dict"]
    after = load_checkpoint(out)["state_dict"]
    encoder_keys = [key for key in before if key.startswith(("encoder.", "normalize."))]
    assert encoder_keys and all(torch.equal(before[key], after[key]) for key in encoder_keys)
    metadata = encoders.read_metadata(out)
    assert metadata["sigma"] == 0.25 and metadata["recipe"]["stage"] == "rush"
    assert metadata["recipe"]["pretrain"]["stage"] == "simclr"


@pytest.mark.slow
def test_full_mode_and_baseline_train_everything(simclr_checkpoint, tmp_path):
    full = finetune(
        FinetuneConfig(
            sigma=0.5,
            out=str(tmp_path / "full.pt"),
            encoder=str(simclr_checkpoint),
            epochs=1,
            device="cpu",
        )
    )
    before = load_checkpoint(simclr_checkpoint, kind="simclr")["state_dict"]
    assert not torch.equal(
        before["encoder.0.weight"], load_checkpoint(full)["state_dict"]["encoder.0.weight"]
    )
    baseline = finetune(
        FinetuneConfig(sigma=0.5, out=str(tmp_path / "baseline.pt"), epochs=1, device="cpu")
    )
    metadata = encoders.read_metadata(baseline)
    assert metadata["recipe"]["stage"] == "supervised" and metadata["recipe"]["pretrain"] is None
    with pytest.raises(ValueError, match="exists"):
        finetune(FinetuneConfig(sigma=0.5, out=str(baseline), epochs=1, device="cpu"))


@pytest.mark.parametrize(
    "main,arguments,message",
    [
        (
            finetune_main,
            ["--sigma", "0.25", "--out", "x.pt", "--encoder", "no.pt"],
            "no checkpoint",
        ),
        (finetune_main, ["--sigma", "-1", "--out", "x.pt"], "sigma"),
        (pretrain_main, ["--dataset", "cifar10", "--root", "nowhere", "--out", "x.pt"], "cifar10"),
        (pretrain_main, ["--batch-size", "5000", "--out", "x.pt"], "batch_size"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(
    tmp_path, monkeypatch, capsys, main, arguments, message
):
    monkeypatch.chdir(tmp_path)
    assert main([*arguments, "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_python_dash_m_exits_2_without_traceback(tmp_path):
    command = [
        sys.executable,
        "-m",
        "certify.cli.finetune",
        "--sigma",
        "0.25",
        "--out",
        "x.pt",
        "--encoder",
        "no.pt",
        "--device",
        "cpu",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

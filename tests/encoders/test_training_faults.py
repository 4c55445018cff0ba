"""Training faults: a run that diverges stops at its first non-finite loss and writes
nothing; an output path that cannot be written is refused before training."""

from __future__ import annotations

import math

import pytest
import torch

import encoders.finetune
import encoders.loop
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_stops_training(value) -> None:
    from encoders.training import check_finite_loss

    check_finite_loss(torch.tensor(2.3), epoch=0, step=0)
    with pytest.raises(ValueError, match="epoch 2, step 5.*not finite"):
        check_finite_loss(torch.tensor(value), epoch=1, step=4)


def test_non_finite_weights_are_never_saved() -> None:
    from encoders.training import check_finite_weights

    model = torch.nn.BatchNorm2d(3)
    check_finite_weights(model)
    model.running_var[1] = math.inf  # a buffer, not a parameter
    with pytest.raises(ValueError, match="running_var"):
        check_finite_weights(model)


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_training_with_an_infinite_learning_rate_writes_nothing(tmp_path, stage) -> None:
    out = tmp_path / "model.pt"
    if stage == "finetune":
        config = FinetuneConfig(sigma=0.25, out=str(out), epochs=1, batch_size=512,
                                lr=math.inf, device="cpu")
        run = finetune
    else:
        config = PretrainConfig(out=str(out), epochs=1, batch_size=512, lr=math.inf,
                                device="cpu")
        run = pretrain
    with pytest.raises(ValueError, match="not finite"):
        run(config)
    assert not out.exists()


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
@pytest.mark.parametrize("out", ["", "FILE/model.pt", "FILE/deeper/model.pt", "FOLDER"])
def test_an_unwritable_out_is_refused_before_training(tmp_path, monkeypatch, stage,
                                                             out) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the data were loaded before out was checked")

    monkeypatch.setattr(encoders.loop, "load_training_split", no_training)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    out = out.replace("FILE", str(tmp_path / "file")).replace("FOLDER", str(tmp_path / "folder"))
    with pytest.raises(ValueError, match="out") as raised:
        if stage == "finetune":
            finetune(FinetuneConfig(sigma=0.25, out=out, device="cpu"))
        else:
            pretrain(PretrainConfig(out=out, device="cpu"))
    assert "Errno" not in str(raised.value)
    assert (tmp_path / "file").read_text() == "x"


def test_a_writable_out_passes(tmp_path) -> None:
    from encoders.training import check_output_path

    check_output_path(str(tmp_path / "new" / "folders" / "model.pt"))
    check_output_path(str(tmp_path / "model.pt"))


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_a_second_training_run_on_the_same_out_is_refused(tmp_path, stage) -> None:
    from encoders.data import ImageDataset, load_dataset
    from encoders.training import output_lock

    digits = load_dataset("digits", "train")
    train = ImageDataset(digits.images[:64], digits.labels[:64], 10)
    out = tmp_path / "model.pt"
    if stage == "finetune":
        run = lambda: finetune(FinetuneConfig(sigma=0.25, out=str(out), epochs=1,  # noqa: E731
                                              batch_size=32, device="cpu"), train=train)
    else:
        run = lambda: pretrain(PretrainConfig(out=str(out), epochs=1,  # noqa: E731
                                              batch_size=32, device="cpu"), train=train)
    with output_lock(out):  # another run, training now
        with pytest.raises(ValueError, match=f"{out.name} is in use by another training run"):
            run()
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert run() == out  # the lock goes with the run that held it
    assert not out.with_name(out.name + ".lock").exists()


def test_the_existing_out_is_checked_again_under_the_lock(tmp_path, monkeypatch) -> None:
    out = tmp_path / "model.pt"
    checked = encoders.finetune._check

    def finished_meanwhile(config):  # an earlier run finishes between the check and the lock
        checked(config)
        out.write_bytes(b"the earlier run's model")

    monkeypatch.setattr(encoders.finetune, "_check", finished_meanwhile)
    with pytest.raises(ValueError, match="exists"):
        finetune(FinetuneConfig(sigma=0.25, out=str(out), epochs=1, batch_size=512,
                                device="cpu"))
    assert out.read_bytes() == b"the earlier run's model"


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_a_diverging_run_reports_its_error_on_a_line_of_its_own(tmp_path, capsys, stage) -> None:
    from certify.cli.finetune import main as finetune_main
    from certify.cli.pretrain import main as pretrain_main

    argv = ["--epochs", "2", "--batch-size", "512", "--lr", "1e30", "--device", "cpu",
            "--out", str(tmp_path / "model.pt")]
    if stage == "finetune":
        assert finetune_main(["--sigma", "0.25", *argv]) == 2
    else:
        assert pretrain_main(argv) == 2
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert lines[-1].startswith(f"encoders-{stage}: error: training diverged"), lines[-3:]

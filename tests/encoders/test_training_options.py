"""Training options: the speed options against float32, Cohen et al.'s preset and step schedule,
batched crop-and-flip, resumable noise training, and resuming from light (half-precision,
momentum-free) checkpoints."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from certify.fast import FastOptions
from encoders import finetune as finetune_module
from encoders.augment import pad_crop_flip
from encoders.backbones import build_classifier
from encoders.checkpoint import half_precision_copy, load_checkpoint, portable_copy
from encoders.data import ImageDataset, load_dataset
from encoders.finetune import PRESETS, FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, pretrain
from encoders.training import step_lr


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    """The first 96 digits training images: a few optimizer steps in well under a second."""
    train = load_dataset("digits", "train")
    return ImageDataset(train.images[:96], train.labels[:96], train.num_classes)


def _finetune_config(tmp_path, name: str, **changes) -> FinetuneConfig:
    settings = {"sigma": 0.25, "out": str(tmp_path / name), "epochs": 3, "batch_size": 32,
                "device": "cpu"}
    return FinetuneConfig(**{**settings, **changes})


def _equal_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_pad_crop_flip_gives_padded_crops_with_every_offset_and_both_flips():
    images = torch.rand(400, 2, 5, 6)
    crops = pad_crop_flip(images, 2, torch.Generator().manual_seed(0))
    assert crops.shape == images.shape
    padded = F.pad(images, (2, 2, 2, 2))  # (B, C, 9, 10)
    seen = set()
    for image, crop in zip(padded, crops):
        matches = [
            (top, left, flip)
            for top, left, flip in itertools.product(range(5), range(5), (False, True))
            if torch.equal(crop, (lambda c: c.flip(2) if flip else c)(
                image[:, top : top + 5, left : left + 6]))
        ]
        assert matches, "a crop that is no flipped or unflipped window of the padded image"
        seen.add(matches[0])
    # 50 (offset, flip) outcomes, 400 draws: each is missed with probability (49/50)**400 < 4e-4
    assert len(seen) == 50


def test_step_schedule_divides_by_ten_every_thirty_epochs():
    assert [step_lr(0.1, epoch, 30, 0.1) for epoch in (0, 29, 30, 59, 60, 89)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def parsed(monkeypatch, command: str, argv: list[str]):
    """The config the command encoders-finetune or encoders-pretrain would train with."""
    import importlib

    module = importlib.import_module(f"certify.cli.{command}")
    seen = []
    monkeypatch.setattr(module, command,
                        lambda config, progress=False, should_stop=None:
                        seen.append(config) or Path("x.pt"))
    assert module.main(argv) == 0
    return seen[0]


def test_cohen_preset_is_their_recipe_and_explicit_values_override_it(tmp_path, monkeypatch):
    config = FinetuneConfig.from_preset("cohen", sigma=0.25, out="x.pt")
    assert (config.optimizer, config.lr, config.schedule, config.lr_step_epochs,
            config.lr_gamma, config.epochs, config.batch_size, config.weight_decay,
            config.augment) == ("momentum", 0.1, "step", 30, 0.1, 90, 256, 1e-4, "crop-flip")
    assert FinetuneConfig.from_preset("cohen", sigma=0.5, out="x.pt", epochs=3).epochs == 3
    cohen = parsed(monkeypatch, "finetune",
                   ["--sigma", "0.25", "--out", "x.pt", "--preset", "cohen", "--lr", "0.05"])
    assert cohen.lr == 0.05 and cohen.epochs == 90 and cohen.optimizer == "momentum"
    plain = parsed(monkeypatch, "finetune", ["--sigma", "0.25", "--out", "x.pt"])
    assert plain.epochs == FinetuneConfig(0, "").epochs
    with pytest.raises(ValueError, match="preset"):
        FinetuneConfig.from_preset("nobody", sigma=0.25, out="x.pt")
    assert set(PRESETS["cohen"]) <= set(FinetuneConfig.__dataclass_fields__)


def test_cohen_preset_runs_with_momentum_sgd_and_steps_the_lr(tmp_path, small_digits,
                                                              monkeypatch):
    seen_lr = []
    real_step = torch.optim.SGD.step

    def record(self, *args, **kwargs):
        seen_lr.append((self.param_groups[0]["lr"], self.param_groups[0]["nesterov"]))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", record)
    config = FinetuneConfig.from_preset("cohen", sigma=0.25, out=str(tmp_path / "c.pt"),
                                        epochs=3, lr_step_epochs=1, batch_size=32, device="cpu")
    out = finetune(config, train=small_digits)
    assert out == tmp_path / "c.pt" and not config.partial_path.exists()
    assert [lr for lr, _ in seen_lr[::3]] == pytest.approx([0.1, 0.01, 0.001])
    assert not any(nesterov for _, nesterov in seen_lr)
    assert load_checkpoint(out)["metadata"]["recipe"]["augment"] == "crop-flip"


def test_noise_training_stopped_and_resumed_equals_an_uninterrupted_run(tmp_path, small_digits):
    straight = finetune(_finetune_config(tmp_path, "straight.pt"), train=small_digits)
    config = _finetune_config(tmp_path, "resumed.pt")
    stopped = finetune(config, should_stop=lambda epochs: epochs == 1, train=small_digits)
    assert stopped == config.partial_path and not (tmp_path / "resumed.pt").exists()
    assert load_checkpoint(stopped)["training_state"]["epoch"] == 1
    asked = []
    resumed = finetune(config, should_stop=lambda epochs: asked.append(epochs) is None and False,
                       train=small_digits)
    assert asked == [2]  # it went on from epoch 1 rather than starting over
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert _equal_weights(a["state_dict"], b["state_dict"])
    assert a["training_state"]["history"] == b["training_state"]["history"]


def test_a_partial_run_of_another_recipe_is_refused(tmp_path, small_digits):
    config = _finetune_config(tmp_path, "run.pt")
    finetune(config, should_stop=lambda epochs: True, train=small_digits)
    with pytest.raises(ValueError, match="another recipe"):
        finetune(_finetune_config(tmp_path, "run.pt", lr=0.5), train=small_digits)


def test_noise_training_resumes_from_half_precision_weights_without_momentum(tmp_path,
                                                                            small_digits):
    config = _finetune_config(tmp_path, "light.pt", optimizer="momentum", lr=0.05)
    finetune(config, should_stop=lambda epochs: True, train=small_digits)
    full = load_checkpoint(config.partial_path)
    light = half_precision_copy(config.partial_path, tmp_path / "light.tmp",
                                {"epoch": 1, "history": full["training_state"]["history"]})
    light.replace(config.partial_path)
    assert load_checkpoint(config.partial_path)["state_dict"]["head.weight"].dtype == torch.float16
    asked = []
    out = load_checkpoint(finetune(
        config, should_stop=lambda epochs: asked.append(epochs) is None and False,
        train=small_digits))
    assert asked == [2] and len(out["training_state"]["history"]) == 3
    assert out["state_dict"]["head.weight"].dtype == torch.float32


def test_pretraining_stops_when_asked_and_resumes_from_a_light_checkpoint(tmp_path,
                                                                          small_digits):
    config = PretrainConfig(dataset="digits", out=str(tmp_path / "simclr.pt"), epochs=3,
                            batch_size=32, device="cpu")
    stopped = pretrain(config, should_stop=lambda epochs: True, train=small_digits)
    assert stopped == config.partial_path and not Path(config.out).exists()
    assert load_checkpoint(stopped, kind="simclr")["training_state"]["epoch"] == 1
    portable_copy(stopped, stopped)
    light = load_checkpoint(stopped, kind="simclr")
    assert "optimizer" not in light["training_state"] and light["training_state"]["epoch"] == 1
    assert all(value.dtype != torch.float32 for value in light["state_dict"].values())
    asked = []
    assert pretrain(config, should_stop=lambda epochs: asked.append(epochs) is None and False,
                    train=small_digits) == Path(config.out)
    assert asked == [2]  # it went on from epoch 1; the last epoch finishes the run unasked
    finished = load_checkpoint(config.out, kind="simclr")
    assert finished["training_state"]["epoch"] == 3 and not config.partial_path.exists()
    assert len(finished["training_state"]["history"]) == 3


def _first_losses(speed: FastOptions, data: ImageDataset, steps: int) -> tuple[list, list]:
    """Losses of the first SGD steps of a small_cnn on fixed noisy batches, and the dtypes that
    the encoder's first convolution produced."""
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, [1, 8, 8], [0.3], [0.3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dtypes = []
    model.encoder[0].register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    forward = speed.prepare(model)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        pixels, labels = data.batch(torch.arange(32 * step, 32 * step + 32))
        pixels = pixels + 0.25 * torch.randn(pixels.shape, generator=generator)
        with speed.autocast(pixels.device):
            logits = forward(speed.inputs(pixels))
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if speed.channels_last:
        assert model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    return losses, dtypes


def test_bf16_and_channels_last_follow_the_float32_loss_curve(small_digits):
    reference, reference_dtypes = _first_losses(FastOptions(), small_digits, 3)
    fast, fast_dtypes = _first_losses(FastOptions(bfloat16=True, channels_last=True),
                                      small_digits, 3)
    assert set(reference_dtypes) == {torch.float32} and set(fast_dtypes) == {torch.bfloat16}
    # bfloat16 rounds to 8 significant bits (relative error <= 2**-8 = 0.4% per operation); over
    # three conv layers and the head the logits move by a few percent of their size (<~0.5 here),
    # so the cross-entropy (about log 10 = 2.3 at the start) moves by a few hundredths. The curve
    # itself must fall by far more than that tolerance for the comparison to mean something.
    assert fast == pytest.approx(reference, abs=0.05)
    assert reference[0] - reference[-1] > 0.1


def test_channels_last_alone_matches_float32_closely(small_digits):
    reference, _ = _first_losses(FastOptions(), small_digits, 3)
    fast, _ = _first_losses(FastOptions(channels_last=True), small_digits, 3)
    # the same float32 arithmetic in another order: differences at rounding level (2**-24)
    assert fast == pytest.approx(reference, rel=1e-4)


@pytest.mark.slow
def test_compiled_training_follows_the_float32_loss_curve(small_digits):
    reference, _ = _first_losses(FastOptions(), small_digits, 3)
    compiled, _ = _first_losses(FastOptions(compile=True), small_digits, 3)
    assert compiled == pytest.approx(reference, rel=1e-3)


def test_speed_options_reach_the_training_loops(tmp_path, small_digits, monkeypatch):
    used = []
    real_autocast = FastOptions.autocast

    def record(self, device):
        used.append((self.bfloat16, self.channels_last))
        return real_autocast(self, device)

    monkeypatch.setattr(FastOptions, "autocast", record)
    finetune(_finetune_config(tmp_path, "fast.pt", epochs=1, bf16=True, channels_last=True),
             train=small_digits)
    pretrain(PretrainConfig(dataset="digits", out=str(tmp_path / "fast-simclr.pt"), epochs=1,
                            batch_size=32, device="cpu", bf16=True, channels_last=True),
             train=small_digits)
    assert used and set(used) == {(True, True)}
    recipe = load_checkpoint(tmp_path / "fast.pt")["metadata"]["recipe"]
    assert recipe["bf16"] is True and "channels_last" not in recipe
    assert finetune_module.CROP_PADDING == 4


def test_both_commands_take_the_speed_flags(monkeypatch):
    flags = ["--bf16", "--channels-last", "--compile"]
    tuned = parsed(monkeypatch, "finetune", ["--sigma", "0.25", "--out", "x.pt", *flags])
    assert (tuned.bf16, tuned.channels_last, tuned.compile) == (True, True, True)
    assert parsed(monkeypatch, "pretrain", flags).speed == FastOptions(True, True, True)
    assert (parsed(monkeypatch, "pretrain", []).speed == FastOptions()
            == FinetuneConfig(0.25, "x").speed)

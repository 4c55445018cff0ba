"""The training loop against plain reference loops written from the recipes, and the recipes that
checkpoints record pinned, so that a run saved by an earlier version resumes.

Each reference trains in one straight loop over epochs and steps, with nothing but the model, the
optimizer, the seeded draws and the loss: SimCLR (Chen et al. 2020: two augmented views, NT-Xent)
and noise training (Cohen et al. 2019, Section 4, and the recipes of :mod:`encoders.recipes`).
The library's loop, with its resuming, locking, checkpoints and stopping, must give bit-identical
weights.
"""

from __future__ import annotations

import pytest
import torch

from encoders.augment import AugmentConfig, augment, pad_crop_flip
from encoders.backbones import Normalize, build_classifier, build_encoder
from encoders.checkpoint import float32_state, load_checkpoint
from encoders.data import ImageDataset, load_dataset
from encoders.finetune import FinetuneConfig, finetune
from encoders.pretrain import PretrainConfig, make_optimizer, pretrain
from encoders.recipes import (
    ConsistencyRecipe,
    GaussianRecipe,
    MacerRecipe,
    SmoothAdvRecipe,
    recipe_loss,
)
from encoders.simclr import SimCLRModel, nt_xent_loss
from encoders.training import (
    Processes,
    channel_stats,
    cosine_lr,
    epoch_batches,
    epoch_generator,
    step_lr,
)

CPU = torch.device("cpu")
ONE = Processes(0, 1, CPU)


@pytest.fixture(scope="module")
def small_digits() -> ImageDataset:
    """The first 96 digits training images: three steps of 32 an epoch."""
    train = load_dataset("digits", "train")
    return ImageDataset(train.images[:96], train.labels[:96], train.num_classes)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def reference_simclr(config: PretrainConfig, train: ImageDataset) -> dict[str, torch.Tensor]:
    """SimCLR in one straight loop: the weights after ``config.epochs`` epochs."""
    torch.manual_seed(config.seed)
    model = SimCLRModel(Normalize(*channel_stats(train)),
                        build_encoder(config.backbone, train.input_shape[0]),
                        config.projection_dim)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr,
                               config.weight_decay)
    views_config = AugmentConfig.for_dataset(config.dataset)
    steps = len(train) // config.batch_size
    for epoch in range(config.epochs):
        generator = epoch_generator(config.seed, epoch, 0, CPU)
        model.train()
        batches = epoch_batches(len(train), config.batch_size, config.seed, epoch, ONE)
        for step, indices in enumerate(batches):
            _set_lr(optimizer, cosine_lr(config.lr, epoch * steps + step, config.epochs * steps))
            images = train.batch(indices)[0]
            views = torch.cat([augment(images, views_config, generator),
                               augment(images, views_config, generator)])
            z_a, z_b = model(views).chunk(2)  # (2B, D) -> two (B, D)
            loss = nt_xent_loss(z_a, z_b, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.state_dict()


def reference_noise_training(config: FinetuneConfig,
                             train: ImageDataset) -> dict[str, torch.Tensor]:
    """Noise training in one straight loop: the weights after ``config.epochs`` epochs."""
    torch.manual_seed(config.seed)
    channels = train.input_shape[0]
    if config.encoder is None:
        model = build_classifier(config.architecture or "small_cnn", train.num_classes,
                                 train.input_shape, *channel_stats(train))
    else:
        pretrained = load_checkpoint(config.encoder, kind="simclr")
        model = build_classifier(pretrained["metadata"]["architecture"], train.num_classes,
                                 train.input_shape, [0.0] * channels, [1.0] * channels)
        encoder_state = {key: value for key, value in float32_state(pretrained["state_dict"])
                         .items() if key.startswith(("normalize.", "encoder."))}
        model.load_state_dict(encoder_state, strict=False)
    linear = config.mode == "linear"
    if linear:
        model.encoder.requires_grad_(False)
    optimizer = make_optimizer(config.optimizer,
                               model.head.parameters() if linear else model.parameters(),
                               config.lr, config.weight_decay)
    steps = len(train) // config.batch_size
    for epoch in range(config.epochs):
        generator = epoch_generator(config.seed, epoch, 0, CPU)
        model.train()
        if linear:
            model.encoder.eval()
        batches = epoch_batches(len(train), config.batch_size, config.seed, epoch, ONE)
        for step, indices in enumerate(batches):
            if config.schedule == "step":
                lr = step_lr(config.lr, epoch, config.lr_step_epochs, config.lr_gamma)
            else:
                lr = cosine_lr(config.lr, epoch * steps + step, config.epochs * steps)
            _set_lr(optimizer, lr)
            pixels, labels = train.batch(indices)
            if config.augment == "crop-flip":
                pixels = pad_crop_flip(pixels, 4, generator)
            loss = recipe_loss(config.recipe, model, pixels, labels, config.sigma, generator,
                               epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.state_dict()


def _assert_same_weights(saved: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]):
    assert saved.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(saved[key], value), key


def _simclr_config(tmp_path, **changes) -> PretrainConfig:
    settings = {"dataset": "digits", "out": str(tmp_path / "simclr.pt"), "epochs": 2,
                "batch_size": 32, "device": "cpu"}
    return PretrainConfig(**{**settings, **changes})


@pytest.mark.parametrize("changes", [{}, {"optimizer": "sgd", "lr": 0.3, "temperature": 0.2}])
def test_pretraining_gives_the_weights_of_the_reference_loop(tmp_path, small_digits, changes):
    config = _simclr_config(tmp_path, **changes)
    saved = load_checkpoint(pretrain(config, train=small_digits), kind="simclr")
    _assert_same_weights(saved["state_dict"], reference_simclr(config, small_digits))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"recipe": ConsistencyRecipe(noise_copies=2, lbd=10.0)},
        {"recipe": SmoothAdvRecipe(noise_copies=2, epsilon=0.5, attack_steps=1,
                                   warmup_epochs=2)},
        {"recipe": MacerRecipe(noise_copies=4, lbd=2.0, deferred_epochs=1)},
        {"optimizer": "momentum", "lr": 0.05, "schedule": "step", "lr_step_epochs": 1,
         "augment": "crop-flip", "weight_decay": 1e-4},
    ],
    ids=["gaussian", "consistency", "smoothadv", "macer", "cohen-step-crop-flip"],
)
def test_noise_training_gives_the_weights_of_the_reference_loop(tmp_path, small_digits, changes):
    config = FinetuneConfig(**{"sigma": 0.25, "out": str(tmp_path / "model.pt"), "epochs": 2,
                               "batch_size": 32, "device": "cpu", **changes})
    saved = load_checkpoint(finetune(config, train=small_digits))
    _assert_same_weights(saved["state_dict"], reference_noise_training(config, small_digits))


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_noise_training_on_an_encoder_gives_the_weights_of_the_reference_loop(
        tmp_path, small_digits, mode):
    encoder = pretrain(_simclr_config(tmp_path, epochs=1), train=small_digits)
    config = FinetuneConfig(sigma=0.5, out=str(tmp_path / "rush.pt"), encoder=str(encoder),
                            mode=mode, epochs=2, batch_size=32, device="cpu",
                            recipe=GaussianRecipe())
    saved = load_checkpoint(finetune(config, train=small_digits))
    _assert_same_weights(saved["state_dict"], reference_noise_training(config, small_digits))


def test_the_recipes_checkpoints_record_are_those_of_earlier_versions(tmp_path, small_digits):
    """A run resumes only from a checkpoint of the same recipe, so the recipe of a configuration
    must stay what earlier versions recorded: these are the recipes they wrote."""
    simclr = _simclr_config(tmp_path)
    assert simclr.recipe(1) == {
        "dataset": "digits", "architecture": "small_cnn", "epochs": 2, "batch_size": 32,
        "temperature": 0.5, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6,
        "projection_dim": 128, "seed": 0, "bf16": False, "stage": "simclr", "world_size": 1,
        "augment": {"crop_scale": (0.6, 1.0), "crop_ratio": (0.75, 4 / 3), "flip": False,
                    "max_rotation": 10.0, "max_shift": 0.1, "jitter_strength": 0.0,
                    "jitter_probability": 0.8, "grayscale_probability": 0.0, "noise_std": 0.1},
    }
    encoder = pretrain(simclr, train=small_digits)
    config = FinetuneConfig(sigma=0.25, out=str(tmp_path / "rush.pt"), encoder=str(encoder),
                            epochs=1, batch_size=32, device="cpu",
                            recipe=ConsistencyRecipe(noise_copies=2))
    recipe = load_checkpoint(finetune(config, train=small_digits))["metadata"]["recipe"]
    assert recipe == {
        "sigma": 0.25, "dataset": "digits", "architecture": "small_cnn", "mode": "full",
        "epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5,
        "seed": 0, "recipe": {"name": "consistency", "noise_copies": 2, "lbd": 20.0, "eta": 0.5},
        "schedule": "cosine", "lr_step_epochs": 30, "lr_gamma": 0.1, "augment": "none",
        "bf16": False, "stage": "rush", "pretrain": simclr.recipe(1),
    }

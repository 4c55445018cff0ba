"""Train a base classifier with Gaussian noise augmentation (the second stage of RUSH).

From a SimCLR checkpoint, train either a linear head on the frozen encoder (``--mode linear``)
or the whole network (``--mode full``) on inputs x + N(0, sigma^2 I); without ``--encoder`` this
is the supervised noise-trained baseline of Cohen, Rosenfeld and Kolter (2019, Section 4: "we
trained the base classifier with Gaussian data augmentation at the noise level sigma"), from
random weights. Noise is drawn per image per step, in pixel space, unclipped.

``--preset cohen`` is the recipe of Cohen et al.'s train.py for CIFAR-10: SGD with momentum 0.9,
lr 0.1 divided by 10 every 30 epochs, 90 epochs, batch 256, weight decay 1e-4, random crops
(4-pixel zero padding) and horizontal flips; flags given explicitly override it.

After every epoch the run is saved to ``<out>.partial``; running the same command again resumes
from it (a partial checkpoint without optimizer state resumes with fresh momentum). The finished
classifier goes to ``out``, which is never overwritten. This is the loop and checkpoint
convention of pre-training (:mod:`encoders.loop`), data-parallel under torchrun too: each process
then takes ``--batch-size`` images a step and the recipe records the number of processes.

Command lines (``encoders-finetune``, :mod:`certify.cli.finetune`)::

    encoders-finetune --encoder runs/digits-simclr.pt --sigma 0.25 --out runs/rush-0.25.pt
    encoders-finetune --encoder runs/digits-simclr.pt --sigma 0.25 \\
        --recipe consistency --lbd 20 --out runs/rush-consistency-0.25.pt     # another loss
    encoders-finetune --dataset digits --sigma 0.25 --out runs/cohen-0.25.pt   # baseline
    encoders-finetune --dataset cifar10 --data-root data --encoder runs/cifar10-simclr.pt \\
        --mode linear --sigma 0.5 --epochs 100 --out runs/cifar10-rush-0.50.pt
    encoders-finetune --dataset cifar10-jpeg --data-root data/cifar10-jpeg --preset cohen \\
        --sigma 0.25 --bf16 --channels-last --out runs/cifar10-cohen-0.25.pt
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from certify.fast import FastOptions
from encoders.augment import pad_crop_flip
from encoders.backbones import Classifier, build_classifier, default_architecture
from encoders.checkpoint import float32_state, load_checkpoint, versions
from encoders.data import ImageDataset
from encoders.errors import CheckpointError, one_line
from encoders.loop import TrainingRun, check_not_written, run_training
from encoders.recipes import GaussianRecipe, Recipe, check_recipe, recipe_loss
from encoders.training import (
    Processes,
    channel_stats,
    check_output_path,
    cosine_lr,
    step_lr,
)

MODES = ("full", "linear")
SCHEDULES = ("cosine", "step")
AUGMENTATIONS = ("none", "crop-flip")
CROP_PADDING = 4
PRESETS: dict[str, dict[str, Any]] = {
    "cohen": {
        "optimizer": "momentum",
        "lr": 0.1,
        "schedule": "step",
        "lr_step_epochs": 30,
        "lr_gamma": 0.1,
        "epochs": 90,
        "batch_size": 256,
        "weight_decay": 1e-4,
        "augment": "crop-flip",
    },
}
"""Named recipes: "cohen" is Cohen, Rosenfeld and Kolter's (2019) CIFAR-10 training (train.py and
datasets.py of locuslab/smoothing)."""


@dataclass(frozen=True)
class FinetuneConfig(TrainingRun):
    """A noise-augmented training run; ``encoder`` None trains the supervised baseline from
    scratch; ``recipe`` is the loss (:mod:`encoders.recipes`, default Gaussian training).
    ``schedule`` "cosine" decays the lr to 0 over the run, "step" multiplies it by
    ``lr_gamma`` every ``lr_step_epochs`` epochs; ``augment`` "crop-flip" adds random crops of the
    image padded by 4 pixels and horizontal flips before the noise; ``bf16``, ``channels_last``
    and ``compile`` are the opt-in speed options (:class:`certify.fast.FastOptions`)."""

    sigma: float
    out: str
    encoder: str | None = None
    dataset: str = "digits"
    root: str | None = None
    architecture: str | None = None
    mode: str = "full"
    epochs: int = 60
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    device: str = "auto"
    recipe: Recipe = GaussianRecipe()
    schedule: str = "cosine"
    lr_step_epochs: int = 30
    lr_gamma: float = 0.1
    augment: str = "none"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> FinetuneConfig:
        """The named recipe of :data:`PRESETS`, with ``fields`` (sigma, out, ...) overriding it.

        Raises:
            ValueError: if the name is unknown.
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **fields})


def learning_rate(config: FinetuneConfig, epoch: int, step: int, steps: int) -> float:
    """The learning rate of ``step`` (of ``steps`` per epoch) in ``epoch`` under the schedule."""
    if config.schedule == "step":
        return step_lr(config.lr, epoch, config.lr_step_epochs, config.lr_gamma)
    return cosine_lr(config.lr, epoch * steps + step, config.epochs * steps)


def _check(config: FinetuneConfig) -> None:
    if not (isinstance(config.sigma, (int, float)) and config.sigma >= 0):
        raise ValueError(f"sigma must be a number >= 0, got {config.sigma!r}")
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.encoder is not None and config.architecture is not None:
        raise ValueError(
            "`architecture` applies to the baseline only; the `encoder` checkpoint fixes it"
        )
    if config.mode == "linear" and config.encoder is None:
        raise ValueError("mode 'linear' needs `encoder` (a SimCLR checkpoint) to freeze")
    if config.epochs < 1 or config.batch_size < 2 or not config.lr > 0 or config.weight_decay < 0:
        raise ValueError("epochs must be >= 1, batch_size >= 2, lr > 0 and weight_decay >= 0")
    if config.schedule not in SCHEDULES or config.augment not in AUGMENTATIONS:
        raise ValueError(
            f"schedule must be one of {SCHEDULES} and augment one of {AUGMENTATIONS}, got "
            f"{config.schedule!r}, {config.augment!r}"
        )
    if config.lr_step_epochs < 1 or not 0 < config.lr_gamma <= 1:
        raise ValueError("lr_step_epochs must be >= 1 and lr_gamma in (0, 1]")
    check_output_path(config.out)
    check_not_written(config.out)


def _initial_model(
    config: FinetuneConfig, train: ImageDataset
) -> tuple[Classifier, dict | None, str]:
    """The classifier to train, the pre-training recipe (None for the baseline), the architecture.

    Raises:
        ValueError: if the encoder checkpoint is of another data set or does not fit the data.
    """
    if config.encoder is None:
        architecture = config.architecture or default_architecture(config.dataset)
        model = build_classifier(
            architecture, train.num_classes, train.input_shape, *channel_stats(train)
        )
        return model, None, architecture
    pretrained = load_checkpoint(config.encoder, kind="simclr")
    metadata = pretrained["metadata"]
    if metadata["dataset"] != config.dataset or metadata["input_shape"] != train.input_shape:
        raise ValueError(
            f"`encoder` was pre-trained on {metadata['dataset']!r} {metadata['input_shape']}, "
            f"not {config.dataset!r} {train.input_shape}"
        )
    channels = train.input_shape[0]
    model = build_classifier(
        metadata["architecture"],
        train.num_classes,
        train.input_shape,
        [0.0] * channels,
        [1.0] * channels,
    )
    encoder_state = {
        key: value
        for key, value in float32_state(pretrained["state_dict"]).items()
        if key.startswith(("normalize.", "encoder."))
    }
    try:
        missing, _ = model.load_state_dict(encoder_state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"`encoder` weights do not fit ({one_line(error)})") from error
    if any(not key.startswith("head.") for key in missing):
        raise CheckpointError(f"`encoder` lacks weights such as {missing[0]}")
    return model, metadata["recipe"], metadata["architecture"]


def noise_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    sigma: float,
    augment: str,
    generator: torch.Generator,
    speed: FastOptions = FastOptions(),
    recipe: Recipe = GaussianRecipe(),
    epoch: int = 0,
) -> float:
    """One update on a batch (B, C, H, W) of pixels with labels (B,): the augmentation
    (``"crop-flip"`` or ``"none"``), then the recipe's loss on Gaussian noise of standard
    deviation sigma (:func:`encoders.recipes.recipe_loss`; Gaussian training: cross-entropy on one
    noisy copy), computed in float32 also under ``speed.bfloat16``, backward, step.

    Returns:
        The loss before the update.
    """
    if augment == "crop-flip":
        pixels = pad_crop_flip(pixels, CROP_PADDING, generator)
    with speed.autocast(pixels.device):
        loss = recipe_loss(recipe, model, speed.inputs(pixels), labels, sigma, generator, epoch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


class NoiseObjective:
    """Noise training as the objective of the training loop (:mod:`encoders.loop`): the
    classifier (on a SimCLR encoder, linear or full, or the baseline from random weights), one
    step of the recipe's loss on noisy copies (:func:`noise_step`), and the run's learning-rate
    schedule."""

    kind = "classifier"

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.label = f"noise training sigma={config.sigma}"

    def build(
        self, train: ImageDataset, processes: Processes
    ) -> tuple[Classifier, Iterable[torch.nn.Parameter], dict[str, Any]]:
        config = self.config
        model, pretrain_recipe, architecture = _initial_model(config, train)
        metadata = _metadata(config, train, architecture, pretrain_recipe, processes.world_size)
        if config.mode == "linear":
            model.encoder.requires_grad_(False)
            return model, model.head.parameters(), metadata
        return model, model.parameters(), metadata

    def set_training_modes(self, model: torch.nn.Module) -> None:
        model.train()
        if self.config.mode == "linear":
            model.get_submodule("encoder").eval()  # frozen batch-norm statistics too

    def learning_rate(self, epoch: int, step: int, steps: int) -> float:
        return learning_rate(self.config, epoch, step, steps)

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
             epoch: int, processes: Processes) -> float:
        config = self.config
        return noise_step(model, optimizer, pixels, labels, config.sigma, config.augment,
                          generator, config.speed, config.recipe, epoch)


def finetune(
    config: FinetuneConfig,
    progress: bool = False,
    should_stop: Callable[[int], bool] | None = None,
    train: ImageDataset | None = None,
) -> Path:
    """Train a base classifier with Gaussian noise at ``config.sigma`` and save it.

    Args:
        config: the run; ``config.recipe`` chooses the loss (:mod:`encoders.recipes`). An
            unfinished run of the same recipe in ``config.partial_path`` is resumed after its
            last finished epoch (:func:`encoders.loop.run_training`).
        progress: show a tqdm bar with the loss (main process only).
        should_stop: asked after each epoch that leaves the run unfinished, once its partial
            checkpoint is written, with the number of epochs done; True ends this call there
            (running it again resumes). Under torchrun the first process's answer holds for all.
        train: the training split, if already loaded (default: loaded from ``config``).

    Returns:
        The path of a "classifier" checkpoint that :func:`encoders.load_classifier` reads; its
        metadata records sigma and the recipe (with the pre-training recipe under "pretrain").
        If ``should_stop`` ended the call early: the partial checkpoint's path instead.

    Raises:
        ValueError: for a bad configuration, a missing data set or checkpoint, an existing
            ``out``, another run training on the same ``out`` (the whole run holds its lock,
            :func:`encoders.training.output_lock`), or a partial checkpoint of another recipe.
    """
    _check(config)
    check_recipe(config.recipe)
    return run_training(config, NoiseObjective(config), progress, should_stop, train)


def _metadata(
    config: FinetuneConfig,
    train: ImageDataset,
    architecture: str,
    pretrain_recipe: dict | None,
    world_size: int,
) -> dict[str, Any]:
    """The classifier's metadata; its recipe is what determines the weights (not file locations,
    the device, the memory format or compilation). The number of processes of a data-parallel
    run is part of it (the global batch is ``batch_size * world_size``); a one-process run's
    recipe has no entry for it, as before data-parallel noise training, so that its partial
    checkpoints from then still resume."""
    recipe = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("out", "root", "device", "encoder", "channels_last", "compile")
    }
    recipe.update(
        stage="rush" if pretrain_recipe else "supervised",
        architecture=architecture,
        pretrain=pretrain_recipe,
    )
    if world_size > 1:
        recipe["world_size"] = world_size
    metadata = {
        "architecture": architecture,
        "dataset": config.dataset,
        "sigma": float(config.sigma),
        "num_classes": train.num_classes,
        "input_shape": train.input_shape,
        "recipe": recipe,
        "versions": versions(),
    }
    classes = getattr(train, "classes", None)
    if classes is not None:  # an image folder's names, in label order
        metadata["classes"] = list(classes)
    return metadata

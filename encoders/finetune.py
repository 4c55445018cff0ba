"""Train a base classifier with Gaussian noise augmentation (the second stage of RUSH).

From a SimCLR checkpoint, train either a linear head on the frozen encoder (``--mode linear``)
or the whole network (``--mode full``) on inputs x + N(0, sigma^2 I); without ``--encoder`` this
is the supervised noise-trained baseline of Cohen, Rosenfeld and Kolter (2019, Section 4: "we
trained the base classifier with Gaussian data augmentation at the noise level sigma"), from
random weights. Noise is drawn per image per step, in pixel space, unclipped.

Command lines (``encoders-finetune``, :mod:`certify.cli.finetune`)::

    encoders-finetune --encoder runs/digits-simclr.pt --sigma 0.25 --out runs/rush-0.25.pt
    encoders-finetune --dataset digits --sigma 0.25 --out runs/cohen-0.25.pt   # baseline
    encoders-finetune --dataset cifar10 --root data --encoder runs/cifar10-simclr.pt \\
        --mode linear --sigma 0.5 --epochs 100 --out runs/cifar10-rush-0.50.pt
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from encoders.backbones import Classifier, build_classifier, default_architecture
from encoders.checkpoint import load_checkpoint, save_checkpoint, versions
from encoders.data import ImageDataset, load_dataset
from encoders.errors import CheckpointError, one_line
from encoders.pretrain import make_optimizer
from encoders.training import (
    Processes,
    channel_stats,
    check_finite_loss,
    check_finite_weights,
    check_output_path,
    cosine_lr,
    epoch_batches,
    epoch_generator,
    resolve_device,
)

MODES = ("full", "linear")


@dataclass(frozen=True)
class FinetuneConfig:
    """A noise-augmented training run; ``encoder`` None trains the supervised baseline from
    scratch."""

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


def _check(config: FinetuneConfig) -> None:
    if not (isinstance(config.sigma, (int, float)) and config.sigma >= 0):
        raise ValueError(f"sigma must be a number >= 0, got {config.sigma!r}")
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.encoder is not None and config.architecture is not None:
        raise ValueError(
            "--arch applies to the baseline only; the --encoder checkpoint fixes the architecture"
        )
    if config.mode == "linear" and config.encoder is None:
        raise ValueError("mode 'linear' needs --encoder (a SimCLR checkpoint) to freeze")
    if config.epochs < 1 or config.batch_size < 2 or not config.lr > 0 or config.weight_decay < 0:
        raise ValueError("epochs must be >= 1, batch_size >= 2, lr > 0 and weight_decay >= 0")
    check_output_path(config.out)
    if Path(config.out).exists():
        raise ValueError(
            f"{config.out} exists; remove it or choose another --out (nothing is overwritten)"
        )


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
            f"--encoder was pre-trained on {metadata['dataset']!r} {metadata['input_shape']}, "
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
        for key, value in pretrained["state_dict"].items()
        if key.startswith(("normalize.", "encoder."))
    }
    try:
        missing, _ = model.load_state_dict(encoder_state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"--encoder weights do not fit ({one_line(error)})") from error
    if any(not key.startswith("head.") for key in missing):
        raise CheckpointError(f"--encoder lacks weights such as {missing[0]}")
    return model, metadata["recipe"], metadata["architecture"]


def finetune(config: FinetuneConfig, progress: bool = False) -> Path:
    """Train a base classifier with Gaussian noise at ``config.sigma`` and save it.

    Args:
        config: the run.
        progress: show a tqdm bar with the loss.

    Returns:
        The path of a "classifier" checkpoint that :func:`encoders.load_classifier` reads; its
        metadata records sigma and the recipe (with the pre-training recipe under "pretrain").

    Raises:
        ValueError: for a bad configuration, a missing data set or checkpoint, or an existing
            ``out``.
    """
    _check(config)
    device = resolve_device(config.device)
    train = load_dataset(config.dataset, "train", config.root)
    torch.manual_seed(config.seed)
    model, pretrain_recipe, architecture = _initial_model(config, train)
    model.to(device)
    frozen = config.mode == "linear"
    trained_parameters = model.head.parameters() if frozen else model.parameters()
    if frozen:
        model.encoder.requires_grad_(False)
    optimizer = make_optimizer(config.optimizer, trained_parameters, config.lr, config.weight_decay)
    one_process = Processes(0, 1, device)
    steps = len(epoch_batches(len(train), config.batch_size, config.seed, 0, one_process))
    bar = tqdm(
        total=config.epochs * steps,
        desc=f"noise training sigma={config.sigma}",
        disable=not progress,
    )
    for epoch in range(config.epochs):
        generator = epoch_generator(config.seed, epoch, 0, device)
        model.train()
        if frozen:
            model.encoder.eval()  # frozen batch-norm statistics too
        for step, indices in enumerate(
            epoch_batches(len(train), config.batch_size, config.seed, epoch, one_process)
        ):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(config.lr, epoch * steps + step, config.epochs * steps)
            pixels, labels = train.batch(indices)
            pixels, labels = pixels.to(device), labels.to(device)
            noise = torch.randn(pixels.shape, generator=generator, device=device)
            loss = F.cross_entropy(model(pixels + config.sigma * noise), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            check_finite_loss(loss, epoch, step)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
    bar.close()
    recipe = {
        key: value
        for key, value in asdict(config).items()
        if key not in ("out", "root", "device", "encoder")
    }
    recipe.update(
        stage="rush" if pretrain_recipe else "supervised",
        architecture=architecture,
        pretrain=pretrain_recipe,
    )
    metadata = {
        "architecture": architecture,
        "dataset": config.dataset,
        "sigma": float(config.sigma),
        "num_classes": train.num_classes,
        "input_shape": train.input_shape,
        "recipe": recipe,
        "versions": versions(),
    }
    check_finite_weights(model)
    save_checkpoint(config.out, "classifier", metadata, model.state_dict())
    return Path(config.out)

"""SimCLR pre-training of an encoder (the first stage of RUSH), resumable and data-parallel.

Command lines (``encoders-pretrain``, :mod:`certify.cli.pretrain`)::

    encoders-pretrain --dataset digits --epochs 100 --out runs/digits-simclr.pt
    encoders-pretrain --dataset cifar10 --data-root data --epochs 500 --batch-size 512 \\
        --optimizer sgd --lr 0.6 --weight-decay 1e-6 --out runs/cifar10-simclr.pt
    torchrun --nproc-per-node 2 -m certify.cli.pretrain --dataset digits --batch-size 128 \\
        --out runs/ddp.pt

The run is saved to ``<out>.partial`` after every epoch and the finished checkpoint (kind
"simclr") goes to ``out``, which is never overwritten; running the same command again resumes
after the last finished epoch and continues exactly as an uninterrupted run would. A partial
checkpoint whose training state lacks the optimizer (a float16 copy made with
:func:`encoders.checkpoint.portable_copy` to carry a run to another machine) resumes with fresh
momentum. This is the loop and checkpoint convention of noise training (:mod:`encoders.loop`).
Versions before it saved the unfinished run at ``out`` itself; such a file is refused with a
message to rename it to ``<out>.partial``, from which the same command resumes it.
Under torchrun each process takes ``--batch-size`` images per step and the NT-Xent negatives are
gathered from all processes, so the loss is that of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.nn.functional as dist_fn

from certify.fast import FastOptions
from encoders.augment import AugmentConfig, augment
from encoders.backbones import ARCHITECTURES, Normalize, build_encoder, default_architecture
from encoders.checkpoint import CheckpointError, float32_state, load_checkpoint, versions
from encoders.data import DATASET_NAMES, ImageDataset
from encoders.errors import one_line
from encoders.loop import TrainingRun, check_not_written, run_training
from encoders.simclr import SimCLRModel, nt_xent_loss
from encoders.training import Processes, channel_stats, check_output_path, cosine_lr
from encoders.training import make_optimizer as make_optimizer  # its home before encoders.training


@dataclass(frozen=True)
class PretrainConfig(TrainingRun):
    """A SimCLR pre-training run; ``architecture`` None picks small_cnn for digits, else
    resnet18. ``bf16``, ``channels_last`` and ``compile`` are the opt-in speed options
    (:class:`certify.fast.FastOptions`)."""

    dataset: str = "digits"
    out: str = "runs/simclr.pt"
    root: str | None = None
    architecture: str | None = None
    epochs: int = 100
    batch_size: int = 256
    temperature: float = 0.5
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    projection_dim: int = 128
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def backbone(self) -> str:
        return self.architecture or default_architecture(self.dataset)

    def recipe(self, world_size: int) -> dict:
        """What determines the weights (not where files live, which device runs it, or the
        memory format and compilation, which change no arithmetic; bf16 does)."""
        recipe = {
            key: value
            for key, value in asdict(self).items()
            if key not in ("out", "root", "device", "channels_last", "compile")
        }
        recipe.update(
            stage="simclr",
            architecture=self.backbone,
            world_size=world_size,
            augment=asdict(AugmentConfig.for_dataset(self.dataset)),
        )
        return recipe


def _check(config: PretrainConfig) -> None:
    if config.dataset not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {config.dataset!r}")
    if config.backbone not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {config.backbone!r}")
    for name in ("epochs", "batch_size", "projection_dim"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.batch_size < 2:
        raise ValueError(
            f"batch_size must be >= 2 (NT-Xent needs negatives), got {config.batch_size}"
        )
    if not (config.temperature > 0 and config.lr > 0 and config.weight_decay >= 0):
        raise ValueError("temperature and lr must be > 0 and weight_decay >= 0")
    check_output_path(config.out)
    check_not_written(config.out)


def global_batch_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, temperature: float, processes: Processes
) -> torch.Tensor:
    """NT-Xent of this process's (B, D) view pairs against the views of every process.

    Each process's loss is the mean over its own anchors with all world * 2B views as candidates,
    so the mean over processes is the single-process loss of the whole batch; all_gather passes
    gradients back to the process that made each embedding, and DistributedDataParallel's
    averaging of parameter gradients then yields that loss's gradient.
    """
    if not processes.distributed:
        return nt_xent_loss(z_a, z_b, temperature)
    all_a = torch.cat(dist_fn.all_gather(z_a))  # (world * B, D)
    all_b = torch.cat(dist_fn.all_gather(z_b))  # (world * B, D)
    return nt_xent_loss(z_a, z_b, temperature, keys=(all_a, all_b, processes.rank * len(z_a)))


def simclr_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    temperature: float,
    augment_config: AugmentConfig,
    generator: torch.Generator,
    processes: Processes,
    speed: FastOptions = FastOptions(),
) -> float:
    """One SimCLR update on a batch (B, C, H, W) of pixels: two views, NT-Xent, backward, step.

    Under ``speed.bfloat16`` the forward pass runs in bfloat16 autocast and NT-Xent in float32 on
    its outputs; ``model`` is what :meth:`FastOptions.prepare` returned.

    Returns:
        The loss before the update.
    """
    views = torch.cat(
        [augment(images, augment_config, generator), augment(images, augment_config, generator)]
    )
    with speed.autocast(views.device):
        projections = model(speed.inputs(views))
    z_a, z_b = projections.float().chunk(2)  # (2B, D) -> two (B, D); one forward for DDP
    loss = global_batch_loss(z_a, z_b, temperature, processes)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


class SimCLRObjective:
    """SimCLR (Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning
    of Visual Representations", ICML 2020) as the objective of the training loop
    (:mod:`encoders.loop`): the model normalize -> encoder -> projection head, one NT-Xent step
    on two augmented views of each image (:func:`simclr_step`), cosine decay of the learning rate
    over the whole run."""

    kind = "simclr"
    label = "simclr"

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.views = AugmentConfig.for_dataset(config.dataset)

    def build(
        self, train: ImageDataset, processes: Processes
    ) -> tuple[SimCLRModel, Iterable[torch.nn.Parameter], dict[str, Any]]:
        config = self.config
        model = SimCLRModel(
            Normalize(*channel_stats(train)),
            build_encoder(config.backbone, train.input_shape[0]),
            config.projection_dim,
        )
        metadata = {
            "architecture": config.backbone,
            "dataset": config.dataset,
            "sigma": 0.0,
            "num_classes": train.num_classes,
            "input_shape": train.input_shape,
            "recipe": config.recipe(processes.world_size),
            "versions": versions(),
        }
        return model, model.parameters(), metadata

    def set_training_modes(self, model: torch.nn.Module) -> None:
        model.train()

    def learning_rate(self, epoch: int, step: int, steps: int) -> float:
        return cosine_lr(self.config.lr, epoch * steps + step, self.config.epochs * steps)

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
             epoch: int, processes: Processes) -> float:
        return simclr_step(model, optimizer, pixels, self.config.temperature, self.views,
                           generator, processes, self.config.speed)


def pretrain(
    config: PretrainConfig,
    progress: bool = False,
    should_stop: Callable[[int], bool] | None = None,
    train: ImageDataset | None = None,
) -> Path:
    """Pre-train with SimCLR, resuming from ``<config.out>.partial`` if it holds an unfinished
    run (:func:`encoders.loop.run_training`).

    Args:
        config: the run.
        progress: show a tqdm bar with the loss (main process only).
        should_stop: asked after each epoch that leaves the run unfinished, once its partial
            checkpoint is written, with the number of epochs done; True ends this call there
            (running it again resumes). Under torchrun the first process's answer holds for all.
        train: the training split, if already loaded (default: loaded from ``config``).

    Returns:
        The checkpoint path ``config.out``: kind "simclr", metadata with sigma 0.0 and the
        recipe, the model's state dict (normalize, encoder, projector) and training_state (epoch,
        history). If ``should_stop`` ended the call early: the partial checkpoint's path, whose
        training_state also holds the optimizer's.

    Raises:
        ValueError: for a bad configuration, a missing data set, an existing ``config.out`` (an
            unfinished run saved there by an earlier version included), a partial checkpoint of
            another recipe, or another run training on the same output (the whole run holds its
            lock, :func:`encoders.training.output_lock`).
    """
    _check(config)
    return run_training(config, SimCLRObjective(config), progress, should_stop, train)


def load_simclr(path: str | Path) -> SimCLRModel:
    """The SimCLR model of an ``encoders-pretrain`` checkpoint (finished or not), on the CPU in
    eval mode; ``.normalize`` then ``.encoder`` give the features a linear probe reads.

    Raises:
        CheckpointError: (a ValueError) if the file is no readable SimCLR checkpoint.
    """
    payload = load_checkpoint(path, kind="simclr")
    metadata = payload["metadata"]
    channels = metadata["input_shape"][0]
    model = SimCLRModel(Normalize([0.0] * channels, [1.0] * channels),
                        build_encoder(metadata["architecture"], channels),
                        metadata["recipe"]["projection_dim"])
    try:
        model.load_state_dict(float32_state(payload["state_dict"]))
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit ({one_line(error)})") from error
    return model.eval()

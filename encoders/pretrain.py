"""SimCLR pre-training of an encoder (the first stage of RUSH), resumable and data-parallel.

Command lines (``encoders-pretrain``, :mod:`certify.cli.pretrain`)::

    encoders-pretrain --dataset digits --epochs 100 --out runs/digits-simclr.pt
    encoders-pretrain --dataset cifar10 --data-root data --epochs 500 --batch-size 512 \\
        --optimizer sgd --lr 0.6 --weight-decay 1e-6 --out runs/cifar10-simclr.pt
    torchrun --nproc-per-node 2 -m certify.cli.pretrain --dataset digits --batch-size 128 \\
        --out runs/ddp.pt

The checkpoint (kind "simclr") is rewritten atomically after every epoch; running the same
command again resumes after the last finished epoch and continues exactly as an uninterrupted run
would. A checkpoint whose training state lacks the optimizer (a float16 copy made with
:func:`encoders.checkpoint.half_precision_copy` to carry a run to another machine) resumes with
fresh momentum.
Under torchrun each process takes ``--batch-size`` images per step and the NT-Xent negatives are
gathered from all processes, so the loss is that of the global batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from tqdm import tqdm

from certify.fast import FastOptions
from encoders.augment import AugmentConfig, augment
from encoders.backbones import ARCHITECTURES, Normalize, build_encoder, default_architecture
from encoders.checkpoint import (
    CheckpointError,
    float32_state,
    load_checkpoint,
    save_checkpoint,
    versions,
)
from encoders.data import DATASET_NAMES, ImageDataset, load_training_split
from encoders.errors import one_line
from encoders.simclr import SimCLRModel, nt_xent_loss
from encoders.training import (
    Processes,
    channel_stats,
    check_finite_loss,
    check_finite_weights,
    check_output_path,
    cosine_lr,
    epoch_batches,
    epoch_generator,
    on_device,
    output_lock,
    start_processes,
    stop_processes,
)


@dataclass(frozen=True)
class PretrainConfig:
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

    @property
    def speed(self) -> FastOptions:
        return FastOptions(channels_last=self.channels_last, bfloat16=self.bf16,
                           compile=self.compile)

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


def make_optimizer(name: str, parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam ("adam"), SGD with Nesterov momentum 0.9 ("sgd"), or SGD with heavy-ball momentum 0.9
    ("momentum", Cohen et al.'s optimizer). Raises ValueError for another name."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name in ("sgd", "momentum"):
        return torch.optim.SGD(
            parameters, lr=lr, momentum=0.9, nesterov=name == "sgd", weight_decay=weight_decay
        )
    raise ValueError(f"optimizer must be 'adam', 'sgd' or 'momentum', got {name!r}")


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


def pretrain(
    config: PretrainConfig,
    progress: bool = False,
    should_stop: Callable[[int], bool] | None = None,
    train: ImageDataset | None = None,
) -> Path:
    """Pre-train with SimCLR, resuming from ``config.out`` if it holds an unfinished run.

    Args:
        config: the run.
        progress: show a tqdm bar with the loss (main process only).
        should_stop: asked after each epoch's checkpoint is written, with the number of epochs
            done; True ends this call early (running it again resumes). Under torchrun the first
            process's answer holds for all.
        train: the training split, if already loaded (default: loaded from ``config``).

    Returns:
        The checkpoint path: kind "simclr", metadata with sigma 0.0 and the recipe, the model's
        state dict (normalize, encoder, projector) and training_state (epoch, optimizer, history).

    Raises:
        ValueError: for a bad configuration, a missing data set, an existing checkpoint of
            another recipe at ``config.out``, or another run training on it (the whole run holds
            its lock, :func:`encoders.training.output_lock`).
    """
    _check(config)
    processes = start_processes(config.device)
    try:
        # One process writes the checkpoint, so it alone holds the lock of the output.
        with output_lock(config.out) if processes.is_main else contextlib.nullcontext():
            return _run(config, processes, progress, should_stop, train)
    finally:
        stop_processes(processes)


def _run(
    config: PretrainConfig,
    processes: Processes,
    progress: bool,
    should_stop: Callable[[int], bool] | None,
    train: ImageDataset | None,
) -> Path:
    device, out = processes.device, Path(config.out)
    if train is None:
        train = load_training_split(config.dataset, config.root)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = SimCLRModel(
        Normalize(*channel_stats(train)),
        build_encoder(config.backbone, train.input_shape[0]),
        config.projection_dim,
    ).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    recipe = config.recipe(processes.world_size)
    metadata = {
        "architecture": config.backbone,
        "dataset": config.dataset,
        "sigma": 0.0,
        "num_classes": train.num_classes,
        "input_shape": train.input_shape,
        "recipe": recipe,
        "versions": versions(),
    }
    start_epoch, history = 0, []
    if out.exists():
        payload = load_checkpoint(out, kind="simclr")
        if payload["metadata"]["recipe"] != recipe:
            raise CheckpointError(f"{out} holds a run of another recipe; choose another --out")
        try:
            model.load_state_dict(float32_state(payload["state_dict"]))
            if "optimizer" in payload["training_state"]:  # else momentum starts afresh
                optimizer.load_state_dict(payload["training_state"]["optimizer"])
            start_epoch, history = (
                payload["training_state"]["epoch"],
                payload["training_state"]["history"],
            )
        except (KeyError, TypeError, RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"cannot resume from {out}: its training state is damaged ({one_line(error)})"
            ) from error
    speed = config.speed
    trained = speed.prepare(
        model, torch.nn.parallel.DistributedDataParallel if processes.distributed else None
    )
    data = on_device(train, device)
    augment_config = AugmentConfig.for_dataset(config.dataset)
    steps = len(epoch_batches(len(train), config.batch_size, config.seed, 0, processes))
    bar = tqdm(
        total=config.epochs * steps,
        initial=start_epoch * steps,
        desc="simclr",
        disable=not (progress and processes.is_main),
    )
    try:  # the bar ends its line before an error is reported
        for epoch in range(start_epoch, config.epochs):
            generator = epoch_generator(config.seed, epoch, processes.rank, device)
            batches = epoch_batches(len(train), config.batch_size, config.seed, epoch, processes)
            model.train()
            total = 0.0
            for step, indices in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(config.lr, epoch * steps + step, config.epochs * steps)
                loss = simclr_step(
                    trained,
                    optimizer,
                    data.batch(indices)[0].to(device),
                    config.temperature,
                    augment_config,
                    generator,
                    processes,
                    speed,
                )
                check_finite_loss(loss, epoch, step)
                total += loss
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
            history.append(total / len(batches))
            if processes.is_main:
                check_finite_weights(model)
                save_checkpoint(
                    out,
                    "simclr",
                    metadata,
                    model.state_dict(),
                    {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "history": history},
                )
            if processes.distributed:
                dist.barrier()
            if _agreed(should_stop is not None and should_stop(epoch + 1), processes):
                break
    finally:
        bar.close()
    return out


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


def _agreed(answer: bool, processes: Processes) -> bool:
    """The first process's answer, in every process."""
    if not processes.distributed:
        return answer
    flag = torch.tensor([int(answer)], device=processes.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())

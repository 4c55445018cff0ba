"""What pre-training and fine-tuning share: devices, processes, optimizers, batches, learning rates,
statistics, and the opt-in speed options; the loop itself is :mod:`encoders.loop`.

Data-parallel runs start under ``torchrun``, which sets RANK, LOCAL_RANK and WORLD_SIZE; the
backend is gloo on the CPU and nccl on CUDA. Every random draw comes from a generator seeded by
(seed, epoch, rank), so a run resumed from an epoch's checkpoint continues exactly as if it had
never stopped.

The speed options are those of ``certify`` (:class:`certify.fast.FastOptions`): bfloat16
autocast of the forward pass (losses are computed in float32 from its outputs), channels_last
memory format and torch.compile. benchmarks/training_speed.py measures them against float32 side
by side.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from certify.files import LockHeldError, path_problem, release_lock, take_lock
from certify.torchrun import torchrun_place
from encoders.data import ImageDataset

OPTIMIZERS = ("adam", "sgd", "momentum")
"""adam; sgd: SGD with Nesterov momentum 0.9; momentum: SGD with (heavy-ball) momentum 0.9."""


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


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_output_path(out: str | os.PathLike) -> None:
    """Refuse, before any training, a checkpoint path that cannot be written: an empty path, a
    folder, something that is not a regular file, or a path below a file or in a folder that is
    not writable (missing folders are fine: saving creates them).

    Raises:
        ValueError: naming ``out`` and what is wrong.
    """
    text = os.fspath(out)
    if not text.strip():
        raise ValueError(f"out must name a checkpoint file, got {text!r}")
    path = Path(text)
    problem = path_problem(path, writable=True)
    if problem is None:
        return
    kind, parent = problem
    if kind == "folder":
        raise ValueError(f"out {text} is a folder; name a checkpoint file such as "
                         f"{path / 'model.pt'}")
    if kind == "not a file":
        raise ValueError(f"out {text} is not a regular file")
    if kind == "below a file":
        raise ValueError(f"out {text} cannot be written: {parent} is a file, not a folder")
    raise ValueError(f"out {text} cannot be written: {parent} is not writable")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of a training output (``fcntl.flock`` on ``<out>.lock``, which
    records the holder's pid and goes when the holder leaves the block or dies) for a whole run,
    so that two runs on one ``--out`` never replace each other's model or partial checkpoint:
    the second is refused at once. It is the lock of certify's results files
    (:func:`certify.files.take_lock`).

    Raises:
        ValueError: naming ``out`` and the holder, if another run holds the lock.
    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = take_lock(path)
    except LockHeldError as error:
        raise ValueError(
            f"out {path} is in use by another training run ({error.holder}); wait for it to "
            "finish or choose another `out`"
        ) from None
    try:
        yield
    finally:
        release_lock(path, descriptor)


def check_finite_loss(loss: torch.Tensor | float, epoch: int, step: int) -> None:
    """Stop a run at its first loss that is NaN or infinite: the weights it would go on to save
    would be too.

    Raises:
        ValueError: naming the epoch and the step (both counted from 1).
    """
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise ValueError(
            f"training diverged: the loss at epoch {epoch + 1}, step {step + 1} is {value}, not "
            "finite; no checkpoint is written from it (lower the learning rate)"
        )


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse to save weights or buffers that hold NaN or infinity (a run diverged).

    Raises:
        ValueError: naming the tensors.
    """
    tensors = {name: tensor for name, tensor in model.state_dict().items()
               if tensor.is_floating_point()}
    if not tensors:
        return
    finite = torch.stack([torch.isfinite(tensor).all() for tensor in tensors.values()])  # (T,)
    if not bool(finite.all()):  # one read-back for all tensors
        broken = [name for name, ok in zip(tensors, finite.tolist()) if not ok]
        raise ValueError(
            f"training diverged: the weights {', '.join(broken[:3])} are not finite (NaN or "
            "inf); no checkpoint is written from them (lower the learning rate)"
        )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: if the name is unknown or CUDA is asked for but absent.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or (name.startswith("cuda") and torch.cuda.is_available()):
        return torch.device(name)
    raise ValueError(
        f"device must be 'auto', 'cpu' or 'cuda[:N]' with CUDA available, got {name!r}"
    )


def start_processes(device: str) -> Processes:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    place = torchrun_place()
    rank, world_size = place.rank, place.world_size
    chosen = resolve_device(device)
    if world_size > 1:
        if chosen.type == "cuda":
            chosen = torch.device("cuda", place.local_rank)
            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Processes(rank, world_size, chosen)


def stop_processes(processes: Processes) -> None:
    if processes.distributed and dist.is_initialized():
        dist.destroy_process_group()


def epoch_generator(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator for one process's epoch: a function of (seed, epoch, rank) only."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def epoch_batches(
    size: int, batch_size: int, seed: int, epoch: int, processes: Processes
) -> list[torch.Tensor]:
    """This process's index batches for one epoch, dropping the incomplete last global batch.

    All processes draw the same permutation (seed, epoch) and take interleaved slices of each
    global batch of ``batch_size * world_size`` images.

    Raises:
        ValueError: if the data set holds fewer images than one global batch.
    """
    global_batch = batch_size * processes.world_size
    if size < global_batch:
        raise ValueError(
            f"batch_size * world_size = {global_batch} exceeds the {size} training images"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
    usable = size - size % global_batch
    batches = order[:usable].view(-1, global_batch)  # (steps, global_batch)
    return list(batches[:, processes.rank :: processes.world_size])


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay from base_lr to 0 over total_steps (Loshchilov and Hutter 2017, no restarts)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def step_lr(base_lr: float, epoch: int, step_epochs: int, gamma: float) -> float:
    """base_lr * gamma ** (epoch // step_epochs): the step schedule of Cohen et al. (2019),
    lr 0.1 divided by 10 every 30 epochs (PyTorch's StepLR, stepped once per epoch)."""
    return base_lr * gamma ** (epoch // step_epochs)


def on_device(dataset: ImageDataset, device: torch.device) -> ImageDataset:
    """An in-memory data set moved to ``device`` (batches are then gathered and converted there);
    any other data set (a lazily read image folder) as it is."""
    return dataset.to(device) if isinstance(dataset, ImageDataset) else dataset


def channel_stats(dataset: ImageDataset, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the pixels in [0, 1], computed in chunks."""
    channels, height, width = dataset.input_shape
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(dataset), chunk):
        pixels = dataset.batch(torch.arange(start, min(start + chunk, len(dataset))))[0].double()
        total += pixels.sum(dim=(0, 2, 3))
        squares += pixels.square().sum(dim=(0, 2, 3))
    count = len(dataset) * height * width
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()

"""The one training loop of pre-training (SimCLR) and noise training, with the objective a strategy.

An :class:`Objective` says what is trained: it builds the model and its checkpoint metadata,
takes one optimizer step on a batch, and names the learning rate of each step (SimCLR, Chen et
al. 2020, in :mod:`encoders.pretrain`; the noise-training recipes of Cohen et al. 2019 and their
successors in :mod:`encoders.finetune`). :func:`run_training` does everything else, the same way
for both:

- the checkpoint convention: after every epoch the run is saved atomically to ``<out>.partial``
  (:func:`partial_path`) with its optimizer state; after the last epoch that file, without the
  optimizer state, is renamed atomically to ``out``. So a file at ``out`` is always a finished
  run, and it is never overwritten: a run whose ``out`` exists is refused. Running the same
  command again resumes from ``<out>.partial`` after its last finished epoch and continues
  exactly as an uninterrupted run would (a partial checkpoint without optimizer state, such as
  :func:`encoders.checkpoint.portable_copy` makes, resumes with fresh momentum); a partial
  checkpoint of another recipe is refused;
- the lock of the output for the whole run (:func:`encoders.training.output_lock`);
- epochs and steps: the batches and random draws of (seed, epoch, rank)
  (:func:`encoders.training.epoch_batches`, :func:`encoders.training.epoch_generator`), the
  learning rate set before every step;
- the finite checks: a non-finite loss stops the run, non-finite weights are never saved;
- the progress bar, and ``should_stop``, asked after each epoch that leaves the run unfinished;
- data parallelism under torchrun (:func:`encoders.training.start_processes`): each process
  takes ``batch_size`` images a step, DistributedDataParallel averages the gradients, the first
  process writes the checkpoints and its answer to ``should_stop`` holds for all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from certify.fast import FastOptions
from encoders.checkpoint import float32_state, load_checkpoint, save_checkpoint
from encoders.data import ImageDataset, load_training_split
from encoders.errors import CheckpointError, one_line
from encoders.training import (
    Processes,
    check_finite_loss,
    check_finite_weights,
    epoch_batches,
    epoch_generator,
    make_optimizer,
    on_device,
    output_lock,
    start_processes,
    stop_processes,
)


class Settings(Protocol):
    """What the loop reads of a run's configuration (:class:`encoders.pretrain.PretrainConfig`,
    :class:`encoders.finetune.FinetuneConfig`)."""

    @property
    def dataset(self) -> str: ...
    @property
    def root(self) -> str | None: ...
    @property
    def out(self) -> str: ...
    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def speed(self) -> FastOptions: ...


class Objective(Protocol):
    """What a run trains for; :func:`run_training` calls these in this order."""

    kind: str
    """The checkpoint kind, "simclr" or "classifier"."""
    label: str
    """The progress bar's description."""

    def build(
        self, train: ImageDataset, processes: Processes
    ) -> tuple[torch.nn.Module, Iterable[torch.nn.Parameter], dict[str, Any]]:
        """The model (with the initial weights drawn after ``torch.manual_seed(seed)``), the
        parameters the optimizer updates, and the checkpoint metadata, whose "recipe" says what
        determines the weights (a partial checkpoint resumes only under the same recipe)."""
        ...

    def set_training_modes(self, model: torch.nn.Module) -> None:
        """Put the model in training mode for an epoch (frozen parts stay in eval mode)."""
        ...

    def learning_rate(self, epoch: int, step: int, steps: int) -> float:
        """The learning rate of ``step`` (of ``steps`` per epoch) in ``epoch``, both from 0."""
        ...

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             pixels: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
             epoch: int, processes: Processes) -> float:
        """One update on a batch (B, C, H, W) with labels (B,), drawing from ``generator``;
        ``model`` is what runs (wrapped for the speed options and data parallelism). Returns the
        loss before the update."""
        ...


class TrainingRun:
    """What the configurations of both objectives derive from their fields alike."""

    out: str
    bf16: bool
    channels_last: bool
    compile: bool

    @property
    def speed(self) -> FastOptions:
        """The opt-in speed options of the run (:class:`certify.fast.FastOptions`)."""
        return FastOptions(channels_last=self.channels_last, bfloat16=self.bf16,
                           compile=self.compile)

    @property
    def partial_path(self) -> Path:
        """Where the unfinished run is saved after every epoch: ``<out>.partial``."""
        return partial_path(self.out)


def partial_path(out: str | os.PathLike) -> Path:
    """Where an unfinished run whose output is ``out`` is saved after every epoch."""
    return Path(f"{os.fspath(out)}.partial")


def check_not_written(out: str | os.PathLike) -> None:
    """Refuse a run whose output exists: a finished run is never overwritten.

    A file at ``out`` whose training state stops before the epochs of its own recipe was left by
    a version that saved unfinished pre-training runs at ``out`` itself; the message says to
    rename it to ``<out>.partial``, from which the same command resumes it.

    Raises:
        ValueError: naming ``out``, if it exists.
    """
    path = Path(out)
    if not path.exists():
        return
    done = _unfinished(path)
    if done is not None:
        raise ValueError(
            f"{path} holds an unfinished run (epoch {done[0]} of {done[1]}) saved where finished "
            f"runs go; rename it to {partial_path(path)} and rerun the same command to resume it"
        )
    raise ValueError(f"{path} exists; remove it or choose another `out` (nothing is overwritten)")


def _unfinished(path: Path) -> tuple[int, int] | None:
    """(epochs done, epochs of its recipe) of a checkpoint that holds an unfinished run; None
    for a finished run or a file that is no checkpoint of ours."""
    try:
        payload = load_checkpoint(path, kind=None)
        done, epochs = payload["training_state"]["epoch"], payload["metadata"]["recipe"]["epochs"]
    except (CheckpointError, KeyError, TypeError):
        return None
    if isinstance(done, int) and isinstance(epochs, int) and done < epochs:
        return done, epochs
    return None


def run_training(
    config: Settings,
    objective: Objective,
    progress: bool = False,
    should_stop: Callable[[int], bool] | None = None,
    train: ImageDataset | None = None,
) -> Path:
    """Train ``objective`` under ``config``, resuming from ``<out>.partial`` if it holds an
    unfinished run (see the module docstring for the checkpoint convention).

    Args:
        config: the run's settings; its output must not exist yet.
        objective: what is trained.
        progress: show a tqdm bar with the loss (first process only).
        should_stop: asked after each epoch that leaves the run unfinished, once its partial
            checkpoint is written, with the number of epochs done; True ends this call there
            (running it again resumes). Under torchrun the first process's answer holds for all.
        train: the training split, if already loaded (default: the training split of
            ``config.dataset`` under ``config.root``).

    Returns:
        ``config.out`` once the run is finished; the partial checkpoint's path if
        ``should_stop`` ended the call early.

    Raises:
        ValueError: if ``out`` exists, another run holds its lock, the partial checkpoint is of
            another recipe or damaged, or the loss or the weights stop being finite.

    Example:
        >>> config = PretrainConfig(dataset="digits", out="runs/simclr.pt", epochs=2)
        >>> run_training(config, SimCLRObjective(config))  # pretrain(config), after its checks
        PosixPath('runs/simclr.pt')
    """
    processes = start_processes(config.device)
    try:
        # One process writes the checkpoints, so it alone holds the lock of the output.
        with output_lock(config.out) if processes.is_main else contextlib.nullcontext():
            if processes.is_main:
                check_not_written(config.out)  # again: a run that held the lock may have finished
            return _train(config, objective, processes, progress, should_stop, train)
    finally:
        stop_processes(processes)


def _train(
    config: Settings,
    objective: Objective,
    processes: Processes,
    progress: bool,
    should_stop: Callable[[int], bool] | None,
    train: ImageDataset | None,
) -> Path:
    device, partial = processes.device, partial_path(config.out)
    if train is None:
        train = load_training_split(config.dataset, config.root)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model, parameters, metadata = objective.build(train, processes)
    model.to(device)
    optimizer = make_optimizer(config.optimizer, parameters, config.lr, config.weight_decay)
    start_epoch, history = _resume(partial, objective.kind, metadata, model, optimizer)
    speed = config.speed
    trained = speed.prepare(
        model, torch.nn.parallel.DistributedDataParallel if processes.distributed else None
    )
    data = on_device(train, device)
    steps = len(epoch_batches(len(data), config.batch_size, config.seed, 0, processes))
    bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, desc=objective.label,
               disable=not (progress and processes.is_main))
    try:  # the bar ends its line before an error is reported
        for epoch in range(start_epoch, config.epochs):
            generator = epoch_generator(config.seed, epoch, processes.rank, device)
            batches = epoch_batches(len(data), config.batch_size, config.seed, epoch, processes)
            objective.set_training_modes(model)
            total = 0.0
            for step, indices in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = objective.learning_rate(epoch, step, steps)
                pixels, labels = data.batch(indices)
                loss = objective.step(trained, optimizer, pixels.to(device), labels.to(device),
                                      generator, epoch, processes)
                check_finite_loss(loss, epoch, step)
                total += loss
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
            history.append(total / len(batches))
            finished = epoch + 1 == config.epochs
            if processes.is_main:
                check_finite_weights(model)
                state: dict[str, Any] = {"epoch": epoch + 1}
                if not finished:  # a finished run needs no optimizer state
                    state["optimizer"] = optimizer.state_dict()
                state["history"] = history
                save_checkpoint(partial, objective.kind, metadata, model.state_dict(), state)
            if processes.distributed:
                dist.barrier()
            if not finished and _agreed(should_stop is not None and should_stop(epoch + 1),
                                        processes):
                return partial
    finally:
        bar.close()
    if processes.is_main:
        os.replace(partial, config.out)
    return Path(config.out)


def _resume(
    path: Path,
    kind: str,
    metadata: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, list[float]]:
    """Load the partial checkpoint of an unfinished run into model and optimizer, if there is
    one; returns (epochs done, mean loss of each).

    Raises:
        CheckpointError: if it holds another recipe or a damaged training state.
    """
    if not path.exists():
        return 0, []
    payload = load_checkpoint(path, kind=kind)
    if payload["metadata"]["recipe"] != metadata["recipe"]:
        raise CheckpointError(
            f"{path} holds a run of another recipe; remove it or choose another `out`"
        )
    try:
        model.load_state_dict(float32_state(payload["state_dict"]))
        state = payload["training_state"]
        if "optimizer" in state:  # else momentum starts afresh
            optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"]), list(state["history"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"cannot resume from {path}: its training state is damaged ({one_line(error)})"
        ) from error


def _agreed(answer: bool, processes: Processes) -> bool:
    """The first process's answer, in every process."""
    if not processes.distributed:
        return answer
    flag = torch.tensor([int(answer)], device=processes.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())

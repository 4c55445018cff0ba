"""Opt-in speed-ups of the base classifier's forward pass, and the fastest batch size.

Randomized smoothing spends nearly all its time in the forward pass of the base classifier (see
benchmarks/certify_overhead.py), so certification is as fast as that pass. Three standard
options, each measured by benchmarks/fast_inference.py before use:

- channels_last memory format (NHWC), which convolution kernels on CPUs and GPUs often prefer;
- bfloat16 autocast, which halves memory traffic and uses tensor cores on GPUs;
- torch.compile, which fuses operations (a one-off compilation cost per input shape).

The certificate's guarantee does not depend on them: randomized smoothing holds for any base
classifier f, and a faster f is just another f. Lower precision can change a few of f's votes
and so the estimate; the benchmark reports the smoothed prediction's agreement with fp32.

Example:
    >>> fast = accelerate(model, FastOptions(channels_last=True, bfloat16=True))
    >>> batch = fastest_batch_size(fast, (3, 32, 32))
    >>> certify(fast, x, 0.25, 100, 100_000, 0.001, batch)
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from certify.sampling import model_device, sample_counts

BATCH_CANDIDATES = (100, 250, 500, 1000, 2000, 5000, 10_000)
"""Batch sizes tried by :func:`fastest_batch_size`."""
GAIN = 1.05
""":func:`fastest_batch_size` climbs on while the next candidate is this many times faster."""
MIN_TIMED_SECONDS = 0.1
"""Each timed pass of :func:`fastest_batch_size` repeats its batch for at least this long."""


@dataclass(frozen=True)
class FastOptions:
    """Which speed-ups to apply; all off by default (plain fp32 eager). Certifying applies them
    through :func:`accelerate`, training (``encoders``) through the methods below.

    Attributes:
        channels_last: keep the model and its input batches in NHWC memory format.
        bfloat16: run the forward pass under bfloat16 autocast.
        compile: run the model through ``torch.compile`` (compiled once per input shape).
    """

    channels_last: bool = False
    bfloat16: bool = False
    compile: bool = False

    def prepare(
        self,
        model: torch.nn.Module,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ) -> torch.nn.Module:
        """Convert ``model`` in place to the memory format, then wrap it (e.g. in
        DistributedDataParallel) and compile it as asked; returns what to run (and train)
        through. Weights are still saved from ``model``."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        wrapped = wrap(model) if wrap is not None else model
        if not self.compile:
            return wrapped
        compiled = torch.compile(wrapped)
        assert isinstance(compiled, torch.nn.Module)  # compiling a module gives a module
        return compiled

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch (B, C, H, W) in the memory format the model expects."""
        if self.channels_last:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on ``device`` when ``bfloat16`` is set, else a no-op context."""
        if self.bfloat16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


class FastForward(torch.nn.Module):
    """A base classifier run with :class:`FastOptions`; it returns fp32 logits (B, K)."""

    def __init__(self, model: torch.nn.Module, options: FastOptions) -> None:
        super().__init__()
        self.options = options
        self.model = model
        self._forward = options.prepare(model)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        batch = self.options.inputs(batch)  # (B, C, H, W), as NHWC under channels_last
        with torch.autocast(batch.device.type, dtype=torch.bfloat16,
                            enabled=self.options.bfloat16):
            return self._forward(batch).float()


def accelerate(model: torch.nn.Module, options: FastOptions) -> torch.nn.Module:
    """The model itself when no option is set, else a :class:`FastForward` around it."""
    if options == FastOptions():
        return model
    return FastForward(model, options).eval()


def fastest_batch_size(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    candidates: tuple[int, ...] = BATCH_CANDIDATES,
    time_budget: float = 10.0,
    rounds: int = 3,
) -> int:
    """The batch size in ``candidates`` with which :func:`certify.sampling.sample_counts` draws
    the most noise samples a second on the model's device, found in about ``time_budget`` seconds.

    What is timed is certification's own work (noise, forward pass, votes), each candidate after
    one warm-up batch. The search climbs from the smallest candidate while the next larger one
    is at least :data:`GAIN` times faster: throughput grows with the batch until the device is
    busy (on a GPU, up to thousands of images) and then stays flat or falls (on a CPU, where
    large batches spill out of the caches, already past a few hundred), so the climb stops near
    the knee, having tried no batch much larger than the one it picks. It also stops at a batch
    that does not fit in GPU memory, or where the next candidate's two batches, at the best rate
    so far, would end past half the budget. The three fastest candidates tried then run in up
    to ``rounds`` interleaved passes while a pass ends within the budget, and the median rate
    decides, so that a passing load on a shared machine does not pick the size. Every timed
    pass repeats its batch for at least :data:`MIN_TIMED_SECONDS`.

    Raises:
        ValueError: if ``candidates`` is empty, ``time_budget`` is not > 0, ``rounds`` < 1, or
            no candidate fits in memory.
    """
    if not candidates:
        raise ValueError("candidates must name at least one batch size")
    if not time_budget > 0 or rounds < 1:
        raise ValueError(f"time_budget must be > 0 and rounds >= 1, got {time_budget}, {rounds}")
    device = model_device(model)
    image = torch.rand(input_shape, device=device)
    started = time.perf_counter()
    rates: dict[int, list[float]] = {}

    def seconds_per_batch(batch_size: int) -> float:
        calls, start = 0, time.perf_counter()
        while True:
            sample_counts(model, image, 0.25, batch_size, batch_size)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_TIMED_SECONDS:
                return elapsed / calls

    def try_size(batch_size: int) -> bool:
        """Time one candidate; False if it does not fit or would overrun half the budget."""
        if rates:
            best = max(first for first, *_ in rates.values())
            if time.perf_counter() - started + 2 * batch_size / best > time_budget / 2:
                return False
        try:
            sample_counts(model, image, 0.25, batch_size, batch_size)  # warm-up
            rates[batch_size] = [batch_size / seconds_per_batch(batch_size)]
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return False
        return True

    sizes = sorted(set(candidates))
    # sample_counts runs the model in eval mode under inference_mode and restores its mode
    if not try_size(sizes[0]):  # the first try has no budget check: only memory fails it
        raise ValueError(f"no batch size in {candidates} fits in the memory of {device}")
    for smaller, batch_size in zip(sizes, sizes[1:]):
        if not try_size(batch_size) or rates[batch_size][0] < GAIN * rates[smaller][0]:
            break
    finalists = sorted(rates, key=lambda batch_size: rates[batch_size][0], reverse=True)[:3]
    for _ in range(rounds - 1):
        pass_seconds = sum(batch_size / rates[batch_size][-1] for batch_size in finalists)
        if time.perf_counter() - started + pass_seconds > time_budget:
            break
        for batch_size in finalists:
            rates[batch_size].append(batch_size / seconds_per_batch(batch_size))
    return max(finalists, key=lambda batch_size: statistics.median(rates[batch_size]))

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

from certify.sampling import evaluating, model_device

BATCH_CANDIDATES = (100, 250, 500, 1000, 2000, 5000, 10_000)
"""Batch sizes tried by :func:`fastest_batch_size`."""


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
    samples_per_try: int = 4000,
    rounds: int = 3,
) -> int:
    """The batch size in ``candidates`` with the highest forward throughput on the model's device.

    The candidates are timed in ``rounds`` interleaved rounds of about ``samples_per_try``
    samples each (after one warm-up batch), and the median rate decides, so that a passing load
    on a shared machine does not pick the size. A candidate that runs out of GPU memory is
    dropped with all larger ones.

    Raises:
        ValueError: if ``candidates`` is empty or none of them fits in memory.
    """
    if not candidates:
        raise ValueError("candidates must name at least one batch size")
    device = model_device(model)
    batches: dict[int, torch.Tensor] = {}
    with evaluating(model), torch.inference_mode():
        for batch_size in sorted(candidates):
            try:
                batches[batch_size] = torch.rand((batch_size, *input_shape), device=device)
                model(batches[batch_size])
            except torch.OutOfMemoryError:
                batches.pop(batch_size)
                torch.cuda.empty_cache()
                break
        if not batches:
            raise ValueError(f"no batch size in {candidates} fits in the memory of {device}")
        rates: dict[int, list[float]] = {batch_size: [] for batch_size in batches}
        for _ in range(rounds):
            for batch_size, batch in batches.items():
                repeats = max(1, samples_per_try // batch_size)
                start = time.perf_counter()
                for _ in range(repeats):
                    model(batch).argmax(1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                rates[batch_size].append(repeats * batch_size / (time.perf_counter() - start))
    return max(rates, key=lambda batch_size: statistics.median(rates[batch_size]))

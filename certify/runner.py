"""One run over a data set: certify, predict, attack or audit every selected image, resumably.

:func:`run` takes a :class:`RunSpec` (a model and a data set already loaded, what to do with each
image, :mod:`certify.run_modes`, and where to write) and appends the rows of every selected image
to a results file (:class:`certify.results.ResultsFile`), whichever the mode:

- *seeded per image*: each chunk of images (one image for certify and predict) draws its noise
  from a generator seeded by (seed, its first idx) alone (:mod:`certify.selection`), so an
  interrupted, resumed or sharded run writes the same rows as one uninterrupted run in every
  column but ``time``;
- *resumable*: rows are flushed and fsynced as they are made, the file is locked while written,
  and running the same specification again does only what is missing (row by row);
- *sharded*: shard i of K takes every K-th chunk from the i-th, writes its own part file and, once
  complete, a marker (:mod:`certify.shards`), for ``certify-merge`` to join;
- *stoppable*: at a time limit, or on SIGTERM (what SLURM and preemptible machines send before
  they end a job), the run finishes the chunk at hand and returns a :class:`RunReport` saying how
  far it got; the results file stays resumable.

Example:
    >>> model = encoders.load_classifier("digits-sigma0.25")  # or any torch.nn.Module
    >>> spec = RunSpec(model, encoders.load_dataset("digits", "test"), Certify(n=10_000),
    ...                sigma=0.25, out=Path("run.tsv"), selection=Selection(skip=10))
    >>> report = run(spec)
    >>> report.done, report.total, report.stopped
    (36, 36, None)
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from certify.fast import accelerate, fastest_batch_size
from certify.results import (
    ResultsConflictError,
    ResultsFile,
    check_results_path,
    read_rows,
    read_settings,
    settings_path,
)
from certify.run_modes import Audit, Certify, Mode, Noise, Predict
from certify.sampling import model_device
from certify.selection import image_generator, selected_indices
from certify.shards import completion_path, mark_complete, part_path

SHARDED_BATCH = 1000
"""The batch size of sharded runs that name none: every shard must draw the same noise."""
TIME_LIMIT = "time limit"
SIGTERM = "SIGTERM"
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """The seconds of a time limit written in seconds or with a unit: 90s, 45m, 5.5h, 2d.

    Raises:
        ValueError: if it is not a finite number > 0, with or without one of those units.
    """
    unit = text[-1:].lower()
    number = text[:-1] if unit in _SECONDS_PER_UNIT else text
    seconds = float(number) * _SECONDS_PER_UNIT.get(unit, 1)
    if not 0 < seconds < math.inf:
        raise ValueError(f"expected a duration > 0 such as 3600, 45m or 5.5h, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Selection:
    """Cohen et al.'s selection: every ``skip``-th image below index ``max`` (or all)."""

    skip: int = 1
    max: int | None = None

    def indices(self, size: int) -> list[int]:
        return selected_indices(size, self.skip, self.max)


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's rows, and where they go.

    Attributes:
        model: the base classifier, (B, C, H, W) pixels in [0, 1] -> logits (B, K), in eval
            mode on the device the run uses.
        dataset: indexable, ``dataset[idx]`` = (image (C, H, W) in [0, 1], label).
        mode: what to do with each image (:mod:`certify.run_modes`).
        sigma: noise level of the smoothed classifier, > 0.
        out: the results file (a shard writes ``<out>.part<i>of<K>``).
        alpha: failure probability of predict and certify, in (0, 1).
        batch: noise samples per forward pass; None chooses one (:func:`choose_batch`).
        seed: the noise seed, >= 0.
        selection: which images.
        shard: (i, K): take only shard i of K.
        overwrite: replace an existing results file made by other settings.
        recorded: what the settings file records besides the run's own numbers: the model and
            the data (names, digests, split, ...), as their loader describes them; the run is
            resumed only where these are the same.
        time_limit: stop after the chunk that ends, or the next that would end, past this many
            seconds from the start of :func:`run` (None: no limit).
    """

    model: torch.nn.Module
    dataset: Any
    mode: Mode
    sigma: float
    out: Path
    alpha: float = 0.001
    batch: int | None = None
    seed: int = 0
    selection: Selection = Selection()
    shard: tuple[int, int] = (0, 1)
    overwrite: bool = False
    recorded: Mapping[str, Any] = field(default_factory=dict)
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.sigma < math.inf):
            raise ValueError(f"sigma must be a finite number > 0, got {self.sigma}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.selection.skip < 1 or (self.selection.max is not None and self.selection.max < 1):
            raise ValueError(f"selection needs skip >= 1 and max >= 1, got {self.selection}")
        shard, num_shards = self.shard
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard (i, K) needs 0 <= i < K, got {self.shard}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {self.time_limit}")

    @property
    def path(self) -> Path:
        """The file this run writes: ``out``, or its shard's part file."""
        shard, num_shards = self.shard
        return self.out if num_shards == 1 else part_path(self.out, shard, num_shards)


@dataclass(frozen=True)
class RunReport:
    """How far a run got.

    Attributes:
        path: the file written (the part file of a shard).
        done: the run's images whose rows are all in the file.
        total: the images the run (its shard) takes.
        stopped: why it stopped early (:data:`TIME_LIMIT` or :data:`SIGTERM`), None if it
            finished.
        dropped: rows the resume dropped as repeated or malformed (and redid).
        batch: the batch size used.
    """

    path: Path
    done: int
    total: int
    stopped: str | None
    dropped: int
    batch: int


def choose_batch(spec: RunSpec) -> int:
    """The batch size of a run that names none: the one the existing results file ``spec.out``
    was made with (unless overwriting), 1000 for shards (which must agree), else the fastest on
    the model's device for images of the data's own shape (:func:`certify.fast.fastest_batch_size`,
    about 10 s).

    Raises:
        ResultsConflictError: if ``spec.out`` cannot hold a results file, or exists with
            unreadable settings or settings that record no batch size.
    """
    check_results_path(spec.out)  # before measuring anything
    if spec.out.exists() and not spec.overwrite:
        try:
            recorded = read_settings(spec.out).get("batch")
        except ResultsConflictError as error:
            raise ResultsConflictError(
                f"{spec.out} exists but {error}; pass `overwrite` to replace it or choose "
                "another `out`") from None
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
            return recorded
        raise ResultsConflictError(
            f"{settings_path(spec.out)} records no batch size (got {recorded!r}): pass `batch`, "
            "or `overwrite` to start afresh")
    if spec.shard[1] > 1:
        return SHARDED_BATCH
    return fastest_batch_size(spec.model, tuple(spec.dataset[0][0].shape))


class StopSignal:
    """The reason to stop: a time limit passed (asked after each chunk) or SIGTERM arrived.

    The time limit counts from the signal's making; the first chunk's time from entering it. Use
    it as a context manager: SIGTERM is caught inside the ``with`` block only (in the main
    thread), and the previous handler comes back afterwards.
    """

    def __init__(self, time_limit: float | None, clock: Callable[[], float]) -> None:
        self.time_limit = time_limit
        self.clock = clock
        self.started = self.last = clock()
        self.reason: str | None = None
        self._previous: Any = None

    def __enter__(self) -> StopSignal:
        self.last = self.clock()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._terminated)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _terminated(self, signum: int, frame: FrameType | None) -> None:
        self.reason = SIGTERM

    def after_chunk(self) -> bool:
        """Whether to stop now: SIGTERM arrived, or the next chunk, taking as long as the last,
        would end past the time limit."""
        now = self.clock()
        chunk_seconds, self.last = now - self.last, now
        return self._stops(now + chunk_seconds)

    def before_chunk(self, expected_seconds: float) -> bool:
        """Whether to stop before a chunk expected to take ``expected_seconds``: SIGTERM
        arrived, or the chunk would end past the time limit."""
        return self._stops(self.clock() + expected_seconds)

    def _stops(self, chunk_end: float) -> bool:
        """Whether SIGTERM arrived or a chunk ending at clock time ``chunk_end`` passes the
        time limit (which then becomes the reason)."""
        if (self.reason is None and self.time_limit is not None
                and chunk_end - self.started > self.time_limit):
            self.reason = TIME_LIMIT
        return self.reason is not None


def run(spec: RunSpec, progress: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] | None = None) -> RunReport:
    """Run ``spec`` over its images, resuming its results file; see the module's docstring.

    Args:
        spec: the run.
        progress: called with (images done, images in all) at the start and after each chunk.
        clock: seconds, for the time limit (default :func:`time.monotonic`).

    Returns:
        How far the run got. A sharded run that finished marks its part complete.

    Raises:
        ValueError: for a bad specification; ResultsConflictError (a ValueError) if the results
            file exists with other settings and ``overwrite`` is false, or another run writes it.
        OSError: if the file cannot be written.
    """
    stop = StopSignal(spec.time_limit, clock or time.monotonic)  # the limit counts from here
    mode = spec.mode
    model = accelerate(spec.model, mode.fast) if isinstance(mode, (Certify, Predict)) else (
        spec.model)
    if spec.batch is None:
        spec = replace(spec, batch=choose_batch(replace(spec, model=model)))
    assert spec.batch is not None
    device = model_device(model)
    shard, num_shards = spec.shard
    settings = {"command": mode.command, **spec.recorded, "sigma": spec.sigma, **mode.settings(),
                "alpha": spec.alpha, "batch": spec.batch, "skip": spec.selection.skip,
                "max": spec.selection.max, "seed": spec.seed, "device": device.type}
    if num_shards > 1:
        settings["shard"] = [shard, num_shards]
    indices = sorted(mode.certificates) if isinstance(mode, Audit) and mode.certificates else (
        spec.selection.indices(len(spec.dataset)))
    size = mode.chunk_size
    chunks = [indices[start:start + size] for start in range(0, len(indices), size)]
    chunks = chunks[shard::num_shards]
    total = sum(map(len, chunks))
    noise = Noise(spec.sigma, spec.alpha, spec.batch)
    path = spec.path
    with ResultsFile(path, mode.columns, settings, overwrite=spec.overwrite,
                     key=mode.key) as results:
        # What an earlier run left beside the file no longer describes it.
        if num_shards > 1:
            completion_path(path).unlink(missing_ok=True)
        positions = [mode.columns.index(name) for name in mode.key]
        written = {tuple(row[name] for name in mode.key) for row in read_rows(path)}
        todo = [chunk for chunk in chunks
                if any(key not in written for idx in chunk for key in mode.keys(idx))]
        done = total - sum(map(len, todo))
        if progress is not None:
            progress(done, total)
        with stop:
            for chunk in todo:
                rows = mode.rows(model, spec.dataset, chunk,
                                 image_generator(spec.seed, chunk[0], device), noise)
                for row in rows:
                    key = tuple(str(row[position]) for position in positions)
                    if key not in written:
                        results.append(row)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
                if stop.after_chunk() and done < total:
                    break
    if num_shards > 1 and done == total:
        mark_complete(path, len(spec.dataset))
    return RunReport(path, done, total, stop.reason if done < total else None,
                     results.dropped, spec.batch)

"""What the two training commands (``encoders-pretrain``, ``encoders-finetune``) share: the flags
built from a config dataclass, the clean stop at an epoch boundary (``--time-limit`` and SIGTERM),
the progress line of each epoch and the report of the checkpoint written."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from certify.cli.common import (
    duration,
    is_main_process,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from encoders.training import OPTIMIZERS


def add_training_arguments(parser: argparse.ArgumentParser, defaults: Any,
                           counts: tuple[str, ...], reals: tuple[str, ...]) -> None:
    """One ``--field-name`` per named field of the config dataclass ``defaults`` (defaulting to
    its value): ``counts`` are integers >= 1, ``reals`` finite numbers > 0 (a weight decay of 0
    is allowed); then ``--seed``, ``--optimizer``, ``--device``, the opt-in speed options and
    ``--time-limit``."""
    for name in counts:
        # --batch, as every command spells it; --batch-size stays its other name for a release
        spellings = ("--batch", "--batch-size") if name == "batch_size" else ()
        parser.add_argument(*(spellings or (f"--{name.replace('_', '-')}",)), dest=name,
                            type=positive_int, default=getattr(defaults, name))
    for name in reals:
        kind = non_negative_float if name == "weight_decay" else positive_float
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind,
                            default=getattr(defaults, name))
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (opt-in)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--time-limit", type=duration, default=None,
                        help="stop at the last epoch boundary before this much wall time "
                             "(seconds, or 45m, 5.5h, 2d); rerun the same command to resume. "
                             "SIGTERM also stops at the next epoch boundary")


class EpochClock:
    """The ``should_stop`` of a training run started by a command: asked after each epoch that
    leaves the run unfinished, once its partial checkpoint is written
    (:func:`encoders.loop.run_training`), it prints one progress line (epochs done, time of the
    last epoch, elapsed, ETA) and says whether to stop there.

    It stops once the next epoch, taking as long as the last, would end past ``time_limit``
    seconds after the clock was made (the first epoch always runs), or once SIGTERM arrived:
    what SLURM and preemptible cloud machines send before they end a job. Stopping leaves the
    epoch's checkpoint in ``<out>.partial``; rerunning the same command resumes from it. Use it
    as a context manager: SIGTERM is caught inside the ``with`` block only.
    """

    def __init__(self, epochs: int, time_limit: float | None) -> None:
        self.epochs = epochs
        self.time_limit = time_limit
        self.started = self.last = time.monotonic()
        self.stop_reason: str | None = None
        self.epochs_done = 0
        self._previous_handler: Any = None

    def __enter__(self) -> EpochClock:
        self._previous_handler = signal.signal(signal.SIGTERM, self._terminated)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGTERM, self._previous_handler)

    def _terminated(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = "SIGTERM"

    def __call__(self, epochs_done: int) -> bool:
        now = time.monotonic()
        epoch_seconds, elapsed = now - self.last, now - self.started
        self.last, self.epochs_done = now, epochs_done
        remaining = self.epochs - epochs_done
        if is_main_process():  # above the progress bar, on a line of its own
            tqdm.write(f"epoch {epochs_done}/{self.epochs}: {_clock(epoch_seconds)} this epoch, "
                       f"{_clock(elapsed)} elapsed, ETA {_clock(remaining * epoch_seconds)}",
                       file=sys.stderr)
        if (self.stop_reason is None and self.time_limit is not None
                and elapsed + epoch_seconds > self.time_limit):
            self.stop_reason = f"--time-limit {_clock(self.time_limit)}"
        return self.stop_reason is not None


def _clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def report_written(path: Path, clock: EpochClock | None = None) -> int:
    """Print the checkpoint a training command wrote (once, in the first process), or, if the
    clock stopped the run early, where it stopped and how to resume; exit 0."""
    if not is_main_process():
        return 0
    if clock is not None and clock.stop_reason is not None and clock.epochs_done < clock.epochs:
        print(f"stopped after epoch {clock.epochs_done} of {clock.epochs} ({clock.stop_reason}); "
              f"{path} holds the run: rerun the same command to resume")
    else:
        print(f"wrote {path}")
    return 0

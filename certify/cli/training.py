"""What the two training commands (``encoders-pretrain``, ``encoders-finetune``) share: the flags
built from a config dataclass, and the report of the checkpoint written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certify.cli.common import (
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
    is allowed); then ``--seed``, ``--optimizer``, ``--device`` and the opt-in speed options."""
    for name in counts:
        parser.add_argument(f"--{name.replace('_', '-')}", type=positive_int,
                            default=getattr(defaults, name))
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


def report_written(path: Path) -> int:
    """Print the checkpoint a training command wrote (once, in the first process); exit 0."""
    if is_main_process():
        print(f"wrote {path}")
    return 0

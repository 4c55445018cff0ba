"""The ``encoders-pretrain`` command: SimCLR pre-training of an encoder (the first stage of RUSH).

Resumable (rerun the same command: the unfinished run is kept in ``<out>.partial``, the finished
checkpoint goes to ``--out`` and is never overwritten) and data-parallel under torchrun; see
:mod:`encoders.pretrain`.

Examples:
    encoders-pretrain --dataset digits --epochs 100 --out runs/digits-simclr.pt
    encoders-pretrain --dataset cifar10 --data-root data --epochs 500 --batch 512 \\
        --optimizer sgd --lr 0.6 --weight-decay 1e-6 --out runs/cifar10-simclr.pt
    torchrun --nproc-per-node 2 -m certify.cli.pretrain --dataset digits --batch 128 \\
        --out runs/ddp.pt
    nice -n 19 encoders-pretrain --dataset cifar10-jpeg --data-root DIR --arch cifar_resnet20 \
        --epochs 60 --batch 256 --channels-last --time-limit 5.5h \
        --out runs/cifar10-simclr.pt >> simclr.log 2>&1      # rerun to resume
"""

from __future__ import annotations

import argparse
import sys

from certify.cli.common import OneLineParser, run_command
from certify.cli.training import EpochClock, add_training_arguments, report_written
from encoders.backbones import ARCHITECTURES
from encoders.data import DATASET_NAMES
from encoders.pretrain import PretrainConfig, pretrain


def build_parser() -> OneLineParser:
    defaults = PretrainConfig()
    parser = OneLineParser(prog="encoders-pretrain",
                           description="SimCLR pre-training of an encoder (resumable).")
    parser.add_argument("--dataset", choices=DATASET_NAMES, default=defaults.dataset)
    parser.add_argument("--data-root", "--root", dest="root",
                        help="data folder (default $ENCODERS_DATA or ./data); --root is the "
                             "older spelling")
    parser.add_argument("--arch", dest="architecture", choices=ARCHITECTURES,
                        help="backbone (default small_cnn for digits, resnet18 otherwise)")
    parser.add_argument("--out", default=defaults.out,
                        help="checkpoint to write when finished (never overwritten; the "
                             "unfinished run is kept in <out>.partial and resumed from there)")
    add_training_arguments(parser, defaults, ("epochs", "batch_size", "projection_dim"),
                           ("temperature", "lr", "weight_decay"))
    return parser


def run(args: argparse.Namespace) -> int:
    arguments = vars(args)
    with EpochClock(args.epochs, arguments.pop("time_limit")) as clock:
        written = pretrain(PretrainConfig(**arguments), progress=True, should_stop=clock)
    return report_written(written, clock)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``encoders-pretrain``."""
    return run_command("encoders-pretrain", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The ``encoders-finetune`` command: Gaussian-noise training of a base classifier, from a SimCLR
encoder (RUSH) or from random weights (Cohen et al.'s baseline); see :mod:`encoders.finetune`.

Examples:
    encoders-finetune --encoder runs/digits-simclr.pt --sigma 0.25 --out runs/rush-0.25.pt
    encoders-finetune --dataset digits --sigma 0.25 --out runs/cohen-0.25.pt   # baseline
    encoders-finetune --encoder runs/digits-simclr.pt --sigma 0.25 \\
        --recipe consistency --lbd 20 --out runs/rush-consistency-0.25.pt     # another loss
    encoders-finetune --dataset cifar10 --data-root data --encoder runs/cifar10-simclr.pt \\
        --mode linear --sigma 0.5 --epochs 100 --out runs/cifar10-rush-0.50.pt
"""

from __future__ import annotations

import argparse
import sys

from certify.cli.common import (
    OneLineParser,
    UserError,
    non_negative_float,
    non_negative_int,
    positive_int,
    run_command,
)
from certify.cli.training import EpochClock, add_training_arguments, report_written
from encoders.backbones import ARCHITECTURES
from encoders.data import DATASET_NAMES
from encoders.finetune import (
    AUGMENTATIONS,
    MODES,
    PRESETS,
    SCHEDULES,
    FinetuneConfig,
    finetune,
)
from encoders.recipes import RECIPE_PRESETS, RECIPES, make_recipe

RECIPE_HYPER_PARAMETERS = {
    "noise_copies": positive_int, "lbd": non_negative_float, "eta": non_negative_float,
    "epsilon": non_negative_float, "attack_steps": positive_int,
    "warmup_epochs": non_negative_int, "gamma": non_negative_float, "beta": non_negative_float,
    "deferred_epochs": non_negative_int,
}
"""The flags of the recipes' hyper-parameters (each applies to the recipes that have it)."""


def build_parser() -> OneLineParser:
    defaults = FinetuneConfig(sigma=0.0, out="")
    parser = OneLineParser(prog="encoders-finetune",
                           description="Train a base classifier with Gaussian noise augmentation.")
    parser.add_argument("--sigma", type=non_negative_float, required=True,
                        help="training noise level (pixels in [0, 1])")
    parser.add_argument("--out", required=True,
                        help="classifier checkpoint to write (never overwritten)")
    parser.add_argument("--encoder",
                        help="SimCLR checkpoint from encoders-pretrain; omit for the baseline")
    parser.add_argument("--dataset", choices=DATASET_NAMES, default=defaults.dataset)
    parser.add_argument("--data-root", "--root", dest="root",
                        help="data folder (default $ENCODERS_DATA or ./data); --root is the "
                             "older spelling")
    parser.add_argument("--arch", dest="architecture", choices=ARCHITECTURES,
                        help="baseline backbone (default small_cnn for digits, resnet18 otherwise)")
    parser.add_argument("--mode", choices=MODES, default=defaults.mode)
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="learning-rate schedule (step: times --lr-gamma every "
                             "--lr-step-epochs epochs)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=defaults.augment)
    add_training_arguments(parser, defaults, ("epochs", "batch_size", "lr_step_epochs"),
                           ("lr", "weight_decay", "lr_gamma"))
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="a named training recipe (cohen: Cohen et al.'s CIFAR-10 training); "
                             "flags given explicitly override it")
    parser.add_argument("--recipe", choices=RECIPES + tuple(RECIPE_PRESETS), default="gaussian",
                        help="training loss, or a paper's named setting (encoders/recipes.py)")
    for name, kind in RECIPE_HYPER_PARAMETERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help="a hyper-parameter of --recipe (default: the recipe's)")
    return parser


def run(args: argparse.Namespace) -> int:
    arguments = vars(args)
    arguments.pop("preset")
    overrides = {name: arguments.pop(name) for name in RECIPE_HYPER_PARAMETERS}
    try:
        recipe = make_recipe(arguments.pop("recipe"), **overrides)
    except ValueError as error:
        raise UserError(f"--recipe: {error}") from None
    time_limit = arguments.pop("time_limit")
    config = FinetuneConfig(**arguments, recipe=recipe)
    with EpochClock(config.epochs, time_limit) as clock:
        written = finetune(config, progress=True, should_stop=clock)
    return report_written(written, clock)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``encoders-finetune``."""
    parser = build_parser()
    # A --preset's values become the defaults, which flags given explicitly override; the main
    # parser checks the preset's name.
    preset_only = argparse.ArgumentParser(add_help=False)
    preset_only.add_argument("--preset")
    preset = preset_only.parse_known_args(argv)[0].preset
    parser.set_defaults(**PRESETS.get(preset or "", {}))
    return run_command("encoders-finetune", parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())

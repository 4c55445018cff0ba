"""What the dataset commands share: the flags that choose a model, its data and a run, the run
they make of them, and the default name of a results file.

Loading lives in :mod:`encoders.runs`; the library below takes any ``torch.nn.Module`` and any
image tensors.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from certify.cli.common import non_negative_int, positive_int, progress_bar
from certify.run_modes import Mode
from certify.runner import RunReport, RunSpec, Selection, run
from encoders.runs import LoadedRun, RunSource
from encoders.runs import load_run as encoders_load_run


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a model, a data set, a device and a noise seed."""
    parser.add_argument("--model", default=None,
                        help="a checkpoint (ours, Cohen et al.'s format, TorchScript, or a state "
                             "dict with --model-factory) or a shipped model's name "
                             "(default: the shipped digits model for --sigma)")
    parser.add_argument("--model-factory", default=None, metavar="MODULE:FUNCTION",
                        help="the function that builds the network whose state dict --model "
                             "holds, e.g. 'torchvision.models:resnet18(num_classes=10)'")
    parser.add_argument("--normalize", nargs=2, type=channel_values, default=None,
                        metavar=("MEAN", "STD"),
                        help="per-channel normalisation the model expects, e.g. "
                             "0.4914,0.4822,0.4465 0.2023,0.1994,0.2010 (prepended as its first "
                             "layer; noise stays in pixel space)")
    parser.add_argument("--dataset", default=None,
                        help="data set name (default: the one the model was trained on)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--data-root", default=None,
                        help="folder holding the data set files (not needed for digits)")
    parser.add_argument("--resize", type=positive_int, default=None,
                        help="image folders: shorter side after resizing (imagenet: 256)")
    parser.add_argument("--crop", type=positive_int, default=None,
                        help="image folders: side of the centre crop (imagenet: 224)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="noise seed (default 0)")
    parser.add_argument("--skip", type=positive_int, default=1,
                        help="take every skip-th image")
    parser.add_argument("--max", type=positive_int, default=None,
                        help="stop before image index max (Cohen et al.'s --max)")


def channel_values(text: str) -> list[float]:
    """argparse type: comma-separated finite numbers, one per channel."""
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.5,0.5,0.5, got {text!r}") from None
    if not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def load_run(args: argparse.Namespace, sigma: float) -> LoadedRun:
    """Load the model and data the flags name (:func:`encoders.runs.load_run`)."""
    return encoders_load_run(RunSource(
        model=args.model, model_factory=args.model_factory,
        normalize=tuple(args.normalize) if args.normalize else None,
        dataset=args.dataset, split=args.split, data_root=args.data_root, resize=args.resize,
        crop=args.crop, device=args.device), sigma)


def run_selected(args: argparse.Namespace, loaded: LoadedRun, mode: Mode, out: Path,
                 shard: tuple[int, int] = (0, 1)) -> RunReport:
    """Run ``mode`` over the images the flags select (:func:`certify.runner.run`), with the
    flags every dataset command has (sigma, alpha, batch, seed, skip, max, overwrite, time limit,
    quiet) and a progress bar named after the command and its file."""
    spec = RunSpec(loaded.model, loaded.dataset, mode, args.sigma, out, alpha=args.alpha,
                   batch=args.batch, seed=args.seed, selection=Selection(args.skip, args.max),
                   shard=shard, overwrite=args.overwrite, recorded=loaded.recorded(),
                   time_limit=args.time_limit)
    with progress_bar(f"{mode.command} {spec.path.name}", args.quiet) as progress:
        return run(spec, progress)


def default_out(model: str, dataset: str, split: str, sigma: float, n: int, kind: str) -> Path:
    """results/<model>_<dataset>-<split>_sigma<s>_n<n>[_<kind>].tsv, where <model> is a shipped
    model's name or the file's name without extensions (for the ``checkpoint.pth.tar`` files of
    Cohen et al.'s releases, the two folders above it: ``resnet110_noise_0.25``)."""
    path = Path(model)
    stem = path.name.split(".")[0] if os.sep in model or path.exists() else model
    if stem == "checkpoint":
        stem = f"{path.parent.parent.name}_{path.parent.name}".strip("_") or stem
    suffix = "" if kind == "certify" else f"_{kind}"
    return Path("results") / f"{stem}_{dataset}-{split}_sigma{sigma:.2f}_n{n}{suffix}.tsv"

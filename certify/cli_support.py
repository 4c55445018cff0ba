"""Plumbing shared by the command-line tools: one-line user errors, devices, models and data.

This is the application edge of the toolkit, the only place outside certify/cli*.py that imports
encoders/. User errors (bad flags, missing checkpoints or data, unwritable paths) end the program
with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR, f"{self.prog}: error: {message}\n")


def one_line(error: BaseException) -> str:
    """The message of ``error`` folded onto one line."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body, turning user errors into one stderr line and exit status 2.

    ValueError (the library's answer to bad input), OSError (unreadable or unwritable files) and
    UserError are user errors; anything else is a bug and keeps its traceback.
    """
    try:
        return body()
    except (UserError, ValueError, OSError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _argument(text: str, convert: type, valid: Callable[[float], bool], expected: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    return _argument(text, float, lambda value: 0 < value < float("inf"), "a finite number > 0")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (underscores allowed, as in 100_000)."""
    return _argument(text, int, lambda value: value >= 1, "an integer >= 1")


def probability(text: str) -> float:
    """argparse type: a float in the open interval (0, 1)."""
    return _argument(text, float, lambda value: 0 < value < 1, "a number in (0, 1)")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {name!r}") from None


def selected_indices(size: int, skip: int, stop: int | None) -> list[int]:
    """Cohen et al.'s selection: every ``skip``-th image index below ``stop`` (or the end)."""
    return list(range(0, size if stop is None else min(size, stop), skip))


def image_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by (seed, idx) alone, so each image's noise is fixed."""
    state = np.random.SeedSequence([seed, idx]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(
        (int(state[0]) << 31) ^ int(state[1]))


def default_out(model: str, dataset: str, split: str, sigma: float, n: int, kind: str) -> Path:
    stem = Path(model).stem if os.sep in model or model.endswith(".pt") else model
    suffix = "" if kind == "certify" else f"_{kind}"
    return Path("results") / f"{stem}_{dataset}-{split}_sigma{sigma:.2f}_n{n}{suffix}.tsv"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that choose a model, a data set and a device, shared by every command."""
    parser.add_argument("--model", default=None,
                        help="checkpoint path or shipped model name "
                             "(default: the shipped digits model for --sigma)")
    parser.add_argument("--dataset", default=None,
                        help="data set name (default: the one the model was trained on)")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--data-root", default=None,
                        help="folder holding the data set files (not needed for digits)")
    parser.add_argument("--resize", type=int, default=None,
                        help="image folders: shorter side after resizing (imagenet: 256)")
    parser.add_argument("--crop", type=int, default=None,
                        help="image folders: side of the centre crop (imagenet: 224)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")


def load_model_and_data(
    args: argparse.Namespace, sigma: float
) -> tuple[torch.nn.Module, torch.utils.data.Dataset, dict[str, Any], str, str]:
    """Load the model named by --model (or the shipped digits model for ``sigma``) and its data.

    Returns:
        (model on --device in eval mode, data set, checkpoint metadata, model name, data set name);
        the metadata also holds ``checkpoint_sha256``, the checkpoint file's SHA-256, so results
        files can tell a retrained model from the one that made them.

    Raises:
        ValueError: from encoders, for a missing or damaged checkpoint or data set.
        UserError: for a bad --device.
    """
    import encoders
    from encoders.checkpoint import classifier_from_state, load_checkpoint, resolve
    from encoders.data import load_dataset

    source = args.model or encoders.pretrained_name(args.dataset or "digits", sigma)
    payload = load_checkpoint(source, kind="classifier")  # read once for weights and metadata
    metadata = payload["metadata"]
    metadata["checkpoint_sha256"] = hashlib.sha256(resolve(source).read_bytes()).hexdigest()
    model = classifier_from_state(metadata, payload["state_dict"])
    model = model.to(resolve_device(args.device)).eval()
    dataset_name = args.dataset or metadata["dataset"]
    dataset = load_dataset(dataset_name, args.split, args.data_root, resize=args.resize,
                           crop=args.crop)
    return model, dataset, metadata, str(source), dataset_name

"""What the dataset commands share: choosing, loading and naming a model, its data and a run.

This is the only place in certify/ that imports encoders/ for models and data: the library below
takes any ``torch.nn.Module`` and any image tensors.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from certify.cli.common import UserError, non_negative_int, positive_int
from certify.sampling import check_sigma_fits, evaluating, model_device
from encoders.errors import one_line


class ModelError(ValueError):
    """The user's model raised an exception or returned something other than logits."""


class ReportingModel(torch.nn.Module):
    """A loaded model whose failures name it: an exception raised inside it (TorchScript's
    ``torch.jit.Error``, anything a factory's module raises) or an output that is not a
    floating-point tensor of logits (B, K) becomes a one-line :class:`ModelError` naming the
    model (the traceback shows under ``CERTIFY_DEBUG=1``); running out of memory and Ctrl-C pass
    through as they are."""

    def __init__(self, network: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.network = network
        self.name = name

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            output = self.network(batch)
        except (MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as error:
            # TorchScript's errors hold the scripted traceback, then the error on its last line.
            lines = str(error).strip().splitlines()
            message = lines[-1] if "Traceback" in str(error) and lines else one_line(error)
            raise ModelError(f"the model {self.name} raised {type(error).__name__}: "
                             f"{' '.join(message.split())}") from error
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            kind = (f"a {output.dtype} tensor" if isinstance(output, torch.Tensor)
                    else f"a {type(output).__name__}")
            raise ModelError(f"the model {self.name} returns {kind}, not floating-point logits "
                             "(B, K); make its forward return the logits tensor alone")
        if output.dim() != 2 or output.shape[0] != batch.shape[0]:
            raise ModelError(f"the model {self.name} returns an output of shape "
                             f"{tuple(output.shape)} for {batch.shape[0]} images, not logits "
                             f"({batch.shape[0]}, K)")
        return output


class LoadedRun(NamedTuple):
    """A model and its data, as the commands use them.

    Attributes:
        model: on the requested device, in eval mode, as a :class:`ReportingModel`.
        dataset: indexable, yielding (image (C, H, W) in [0, 1], label).
        metadata: the checkpoint's metadata plus ``checkpoint_sha256`` of its file.
        model_name: the --model given (or the shipped model's name).
        dataset_name: the data set's name.
        data_root: the folder the data was read from, resolved (None for digits).
        data_sha256: the data set's fingerprint (``fingerprint()`` of encoders' data sets): its
            pixels, or for a lazily read image folder its file list, with labels and classes.
    """

    model: torch.nn.Module
    dataset: Any
    metadata: dict[str, Any]
    model_name: str
    dataset_name: str
    data_root: str | None = None
    data_sha256: str | None = None


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
    """Load the model named by --model (or the shipped digits model for ``sigma``) and its data.

    Raises:
        ValueError: for a missing or damaged checkpoint or data set, a model with NaN or
            infinite weights, a model whose input shape or number of classes is not the data
            set's, or a bad --device.
    """
    import encoders
    from encoders.checkpoint import resolve
    from encoders.data import default_root, load_dataset
    from encoders.training import resolve_device

    source = args.model or encoders.pretrained_name(args.dataset or "digits", sigma)
    device = resolve_device(args.device)
    normalize = tuple(args.normalize) if args.normalize else None
    model, metadata = encoders.load_model(source, factory=args.model_factory, normalize=normalize)
    metadata = {**metadata,
                "checkpoint_sha256": hashlib.sha256(resolve(source).read_bytes()).hexdigest()}
    dataset_name = args.dataset or metadata.get("dataset")
    if dataset_name is None:
        raise UserError(f"{source} does not record the data set it was trained on: "
                        "name it with --dataset")
    dataset = load_dataset(dataset_name, args.split, args.data_root, resize=args.resize,
                           crop=args.crop)
    model = ReportingModel(model, str(source)).to(device).eval()
    check_sigma_fits(model, sigma)  # before any file is written
    check_model_fits_data(model, metadata, source, dataset, f"{dataset_name} {args.split}")
    data_root = None if dataset_name == "digits" else str(
        Path(args.data_root or default_root()).resolve())
    return LoadedRun(model, dataset, metadata, str(source), dataset_name, data_root,
                     dataset.fingerprint())


def check_model_fits_data(model: torch.nn.Module, metadata: dict[str, Any], source: Any,
                          dataset: Any, data_name: str) -> None:
    """Refuse, before the first image, a model that cannot mean anything on this data set: one
    with NaN or infinite weights, or whose recorded input shape or number of classes differs
    from the data set's (where the model or the data set records none, the model is checked as
    it runs).

    Raises:
        UserError: naming the checkpoint and what is wrong.
    """
    network = model.network if isinstance(model, ReportingModel) else model
    broken = [name for name, tensor in network.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise UserError(f"{source} holds NaN or infinite weights ({', '.join(broken[:3])}); "
                        "its votes would mean nothing")
    shape, classes = metadata.get("input_shape"), metadata.get("num_classes")
    data_shape = getattr(dataset, "input_shape", None)
    data_classes = getattr(dataset, "num_classes", None)
    mean = metadata.get("mean")
    if isinstance(mean, list) and data_shape is not None and len(mean) != data_shape[0]:
        raise UserError(f"{source} normalises {len(mean)} channels (--normalize or its first "
                        f"layer), but the {data_name} images have {data_shape[0]}; give one "
                        "value per channel")
    names, data_names = metadata.get("classes"), getattr(dataset, "classes", None)
    if names is not None and data_names is not None and list(names) != list(data_names):
        raise UserError(f"{source} was trained on the classes {', '.join(map(str, names))} (in "
                        f"label order), but the {data_name} classes are "
                        f"{', '.join(data_names)}; its labels would name other classes")
    if shape is not None and data_shape is not None and list(shape) != list(data_shape):
        raise UserError(f"{source} takes images of shape {tuple(shape)}, but the {data_name} "
                        f"images are {tuple(data_shape)}; pass the --dataset it was trained on")
    if shape is None or classes is None:  # TorchScript or a factory: ask the model itself
        image = dataset[0][0].unsqueeze(0).to(model_device(model))  # (1, C, H, W)
        try:
            with torch.inference_mode():
                logits = model(image)
        except ModelError as error:
            raise UserError(f"{error} on the {data_name} images of shape "
                            f"{tuple(image.shape[1:])}") from error
        classes = logits.shape[1]
    if classes is not None and data_classes is not None and classes != data_classes:
        raise UserError(f"{source} has {classes} classes, but {data_name} has {data_classes}; "
                        "pass the --dataset it was trained on")


def check_model_gradients(model: torch.nn.Module, dataset: Any, source: Any,
                          attacks: str) -> None:
    """Refuse, before the first image, a model whose output has no gradient with respect to its
    input (it thresholds, or runs under no_grad): ``attacks`` ascend that gradient.

    Raises:
        UserError: naming the model and the attacks.
    """
    image = dataset[0][0].unsqueeze(0).to(model_device(model)).requires_grad_(True)  # (1, C, H, W)
    with evaluating(model), torch.enable_grad():
        logits = model(image)
    if not logits.requires_grad:
        raise UserError(f"{source} gives no gradient with respect to its input (its output does "
                        f"not require grad), and {attacks} ascend that gradient; certify and "
                        "predict need none")


def model_and_data(args: argparse.Namespace, loaded: LoadedRun) -> dict[str, Any]:
    """What a row's meaning depends on besides the command's own numbers: the model (its file's
    digest, the factory that builds it, the normalisation put in front of it) and the images
    (data set, resolved folder, fingerprint, class names, split, resize and crop). A results
    file resumes, and certificates are audited, only where all of these are the same."""
    return {
        "checkpoint_sha256": loaded.metadata["checkpoint_sha256"],
        "model_factory": args.model_factory,
        "normalize": args.normalize,
        "dataset": loaded.dataset_name, "data_root": loaded.data_root,
        "data_sha256": loaded.data_sha256,
        "classes": None if getattr(loaded.dataset, "classes", None) is None
        else list(loaded.dataset.classes),
        "split": args.split, "resize": args.resize, "crop": args.crop,
    }


def recorded(args: argparse.Namespace, loaded: LoadedRun) -> dict[str, Any]:
    """What a dataset command records beside its results file besides the run's own numbers
    (:attr:`certify.runner.RunSpec.recorded`): the model's name and :func:`model_and_data`."""
    return {"model": loaded.model_name, **model_and_data(args, loaded)}


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

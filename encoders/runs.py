"""A model and its data, loaded for a run over a data set (:mod:`certify.runner`), and what the
run records about them.

:func:`load_run` loads the model a :class:`RunSource` names (a checkpoint in any format
:func:`encoders.load_model` reads, or the shipped digits model for the run's sigma) on the
requested device, in eval mode, and its data set, and refuses before the first image a model that
cannot mean anything on those images. :meth:`LoadedRun.recorded` is what a results file's settings
record about them: a results file resumes, and certificates are audited, only where it is the
same.

Example:
    >>> loaded = load_run(RunSource(dataset="digits", device="cpu"), sigma=0.25)
    >>> spec = RunSpec(loaded.model, loaded.dataset, Certify(n=10_000), sigma=0.25,
    ...                out=Path("run.tsv"), recorded=loaded.recorded())
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

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


@dataclass(frozen=True)
class RunSource:
    """Which model and which images a run takes.

    Attributes:
        model: a checkpoint path or a shipped model's name; None: the shipped digits model for
            the run's sigma (of ``dataset``, default digits).
        model_factory: "module:function" building the network whose state dict ``model`` holds.
        normalize: (mean, std) per channel, prepended to the model as its first layer.
        dataset: the data set's name (default: the one the model was trained on).
        split: "train" or "test".
        data_root: the folder holding the data set files (not needed for digits).
        resize, crop: image folders' shorter side after resizing and centre crop.
        device: "auto", "cpu" or "cuda[:N]".
    """

    model: str | None = None
    model_factory: str | None = None
    normalize: tuple[Sequence[float], Sequence[float]] | None = None
    dataset: str | None = None
    split: str = "test"
    data_root: str | None = None
    resize: int | None = None
    crop: int | None = None
    device: str = "auto"


class LoadedRun(NamedTuple):
    """A model and its data, as a run uses them.

    Attributes:
        model: on the requested device, in eval mode, as a :class:`ReportingModel`.
        dataset: indexable, yielding (image (C, H, W) in [0, 1], label).
        metadata: the checkpoint's metadata plus ``checkpoint_sha256`` of its file.
        model_name: the model given (or the shipped model's name).
        dataset_name: the data set's name.
        source: what was asked for.
        data_root: the folder the data was read from, resolved (None for digits).
        data_sha256: the data set's fingerprint (``fingerprint()`` of encoders' data sets): its
            pixels, or for a lazily read image folder its file list, with labels and classes.
    """

    model: torch.nn.Module
    dataset: Any
    metadata: dict[str, Any]
    model_name: str
    dataset_name: str
    source: RunSource
    data_root: str | None = None
    data_sha256: str | None = None

    def model_and_data(self) -> dict[str, Any]:
        """What a row's meaning depends on besides the run's own numbers: the model (its file's
        digest, the factory that builds it, the normalisation put in front of it) and the images
        (data set, resolved folder, fingerprint, class names, split, resize and crop). A results
        file resumes, and certificates are audited, only where all of these are the same."""
        return {
            "checkpoint_sha256": self.metadata["checkpoint_sha256"],
            "model_factory": self.source.model_factory,
            "normalize": self.source.normalize,
            "dataset": self.dataset_name, "data_root": self.data_root,
            "data_sha256": self.data_sha256,
            "classes": None if getattr(self.dataset, "classes", None) is None
            else list(self.dataset.classes),
            "split": self.source.split, "resize": self.source.resize, "crop": self.source.crop,
        }

    def recorded(self) -> dict[str, Any]:
        """What a run records beside its results file about its model and data
        (:attr:`certify.runner.RunSpec.recorded`): the model's name and
        :meth:`model_and_data`."""
        return {"model": self.model_name, **self.model_and_data()}


def load_run(source: RunSource, sigma: float) -> LoadedRun:
    """Load the model ``source`` names (or the shipped digits model for ``sigma``) and its data.

    Raises:
        ValueError: for a missing or damaged checkpoint or data set, a model with NaN or
            infinite weights, a model whose input shape or number of classes is not the data
            set's, or a bad device.
    """
    import encoders
    from encoders.checkpoint import resolve
    from encoders.data import default_root, load_dataset
    from encoders.training import resolve_device

    name = source.model or encoders.pretrained_name(source.dataset or "digits", sigma)
    device = resolve_device(source.device)
    model, metadata = encoders.load_model(name, factory=source.model_factory,
                                          normalize=source.normalize)
    metadata = {**metadata,
                "checkpoint_sha256": hashlib.sha256(resolve(name).read_bytes()).hexdigest()}
    dataset_name = source.dataset or metadata.get("dataset")
    if dataset_name is None:
        raise ValueError(f"{name} does not record the data set it was trained on: "
                         "name it with `dataset`")
    dataset = load_dataset(dataset_name, source.split, source.data_root, resize=source.resize,
                           crop=source.crop)
    model = ReportingModel(model, str(name)).to(device).eval()
    check_sigma_fits(model, sigma)  # before any file is written
    check_model_fits_data(model, metadata, name, dataset, f"{dataset_name} {source.split}")
    data_root = None if dataset_name == "digits" else str(
        Path(source.data_root or default_root()).resolve())
    return LoadedRun(model, dataset, metadata, str(name), dataset_name, source, data_root,
                     dataset.fingerprint())


def check_model_fits_data(model: torch.nn.Module, metadata: dict[str, Any], source: Any,
                          dataset: Any, data_name: str) -> None:
    """Refuse, before the first image, a model that cannot mean anything on this data set: one
    with NaN or infinite weights, or whose recorded input shape or number of classes differs
    from the data set's (where the model or the data set records none, the model is checked as
    it runs).

    Raises:
        ValueError: naming the checkpoint and what is wrong.
    """
    network = model.network if isinstance(model, ReportingModel) else model
    broken = [name for name, tensor in network.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise ValueError(f"{source} holds NaN or infinite weights ({', '.join(broken[:3])}); "
                        "its votes would mean nothing")
    shape, classes = metadata.get("input_shape"), metadata.get("num_classes")
    data_shape = getattr(dataset, "input_shape", None)
    data_classes = getattr(dataset, "num_classes", None)
    mean = metadata.get("mean")
    if isinstance(mean, list) and data_shape is not None and len(mean) != data_shape[0]:
        raise ValueError(f"{source} normalises {len(mean)} channels (`normalize` or its first "
                        f"layer), but the {data_name} images have {data_shape[0]}; give one "
                        "value per channel")
    names, data_names = metadata.get("classes"), getattr(dataset, "classes", None)
    if names is not None and data_names is not None and list(names) != list(data_names):
        raise ValueError(f"{source} was trained on the classes {', '.join(map(str, names))} (in "
                        f"label order), but the {data_name} classes are "
                        f"{', '.join(data_names)}; its labels would name other classes")
    if shape is not None and data_shape is not None and list(shape) != list(data_shape):
        raise ValueError(f"{source} takes images of shape {tuple(shape)}, but the {data_name} "
                        f"images are {tuple(data_shape)}; pass the `dataset` it was trained on")
    if shape is None or classes is None:  # TorchScript or a factory: ask the model itself
        image = dataset[0][0].unsqueeze(0).to(model_device(model))  # (1, C, H, W)
        try:
            with torch.inference_mode():
                logits = model(image)
        except ModelError as error:
            raise ValueError(f"{error} on the {data_name} images of shape "
                            f"{tuple(image.shape[1:])}") from error
        classes = logits.shape[1]
    if classes is not None and data_classes is not None and classes != data_classes:
        raise ValueError(f"{source} has {classes} classes, but {data_name} has {data_classes}; "
                        "pass the `dataset` it was trained on")


def check_model_gradients(model: torch.nn.Module, dataset: Any, source: Any,
                          attacks: str) -> None:
    """Refuse, before the first image, a model whose output has no gradient with respect to its
    input (it thresholds, or runs under no_grad): ``attacks`` ascend that gradient.

    Raises:
        ValueError: naming the model and the attacks.
    """
    image = dataset[0][0].unsqueeze(0).to(model_device(model)).requires_grad_(True)  # (1, C, H, W)
    with evaluating(model), torch.enable_grad():
        logits = model(image)
    if not logits.requires_grad:
        raise ValueError(f"{source} gives no gradient with respect to its input (its output does "
                        f"not require grad), and {attacks} ascend that gradient; certify and "
                        "predict need none")

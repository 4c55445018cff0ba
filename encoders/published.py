"""Published randomized-smoothing models: Cohen et al.'s checkpoint format and architectures.

Cohen, Rosenfeld and Kolter (ICML 2019, github.com/locuslab/smoothing) save a base classifier as
``torch.save({"arch": ..., "state_dict": ..., "epoch": ..., "optimizer": ...})``, and so do the
releases built on their code (SmoothAdv, Consistency, SmoothMix, CAT-RS). The model they save is
``Sequential(NormalizeLayer, network)``: the normalisation layer keeps its constants as plain
tensors, so none of its values are in the state dict and every key starts with ``1.``; the
ImageNet ResNet-50 is wrapped in ``DataParallel`` as well, so its keys start with ``1.module.``.
This module rebuilds those architectures with exactly those keys and the constants of the data
sets the architectures are trained on, and loads such a checkpoint strictly:

=====================  ====================================================  =========  ========
``arch``               network                                               data set   input
=====================  ====================================================  =========  ========
``cifar_resnet20``     CIFAR ResNet, 3 stages of 3 basic blocks (0.27 M)     cifar10    3x32x32
``cifar_resnet110``    CIFAR ResNet, 3 stages of 18 basic blocks (1.7 M)     cifar10    3x32x32
``cifar100_resnet110`` the same with 100 classes (CAT-RS)                    cifar100   3x32x32
``resnet50``           torchvision's ResNet-50 in DataParallel (25.6 M)      imagenet   3x224x224
=====================  ====================================================  =========  ========

The CIFAR ResNet is the one of He et al. (2016, Section 4.2) as Cohen et al. take it from the
pytorch-classification code: 16-32-64 channels, a 1x1 convolution with batch norm on the shortcut
where the shape changes, 8x8 average pooling and one linear layer. The models take pixels in
[0, 1] and normalise as their first layer, so Gaussian noise and radii live in pixel space.

Example:
    >>> model = cohen_classifier("cifar_resnet20")
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn

from encoders.backbones import CifarResNetFeatures, Normalize
from encoders.errors import CheckpointError, one_line

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Architecture(NamedTuple):
    """What Cohen et al.'s ``get_architecture(arch, dataset)`` builds for one ``arch``."""

    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


PUBLISHED_ARCHITECTURES = {
    "cifar_resnet20": Architecture("cifar10", 10, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD),
    "cifar_resnet110": Architecture("cifar10", 10, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD),
    "cifar100_resnet110": Architecture("cifar100", 100, (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD),
    "resnet50": Architecture("imagenet", 1000, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD),
}
"""The ``arch`` names of Cohen et al.'s checkpoints that are rebuilt to load them, with the data
and normalisation each was trained with (the trainable backbones are
:data:`encoders.backbones.ARCHITECTURES`)."""
_CIFAR_DEPTH = {"cifar_resnet20": 20, "cifar_resnet110": 110, "cifar100_resnet110": 110}


class ConstantNormalize(Normalize):
    """(x - mean) / std whose constants are not saved in the state dict (as Cohen's layer)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(mean, std)
        for name in ("mean", "std"):
            self.register_buffer(name, getattr(self, name), persistent=False)


class CifarResNet(CifarResNetFeatures):
    """The CIFAR ResNet of depth 6n + 2 with its linear layer ``fc``: (B, 3, 32, 32) pixels,
    normalised -> (B, K) logits."""

    def __init__(self, depth: int, num_classes: int) -> None:
        super().__init__(depth)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(super().forward(x))


class DataParallelLayout(nn.Module):
    """Holds a network under the name ``module``, so its keys read as DataParallel saves them."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def cohen_network(arch: str) -> nn.Module:
    """The network of ``arch`` without its normalisation layer, with random weights.

    Raises:
        CheckpointError: (a ValueError) naming the known architectures if ``arch`` is unknown.
    """
    if arch not in PUBLISHED_ARCHITECTURES:
        raise CheckpointError(
            f"unknown arch {arch!r}; known Cohen et al.-format architectures: "
            f"{', '.join(PUBLISHED_ARCHITECTURES)}"
        )
    if arch == "resnet50":
        return DataParallelLayout(torchvision.models.resnet50(weights=None))
    return CifarResNet(_CIFAR_DEPTH[arch], PUBLISHED_ARCHITECTURES[arch].num_classes)


def cohen_classifier(
    arch: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> nn.Sequential:
    """``Sequential(normalisation, network)`` as Cohen et al.'s ``get_architecture`` builds it.

    Args:
        arch: a key of :data:`PUBLISHED_ARCHITECTURES`.
        mean: per-channel mean of the first layer (default: the arch's data set's, as in
            Cohen et al.'s datasets.py).
        std: per-channel standard deviation, > 0 (default: likewise).

    Returns:
        The classifier with random weights: (B, 3, H, W) pixels in [0, 1] -> (B, K) logits.

    Raises:
        CheckpointError: if ``arch`` is unknown.
        ValueError: if mean and std do not have one positive entry per channel.
    """
    network = cohen_network(arch)
    spec = PUBLISHED_ARCHITECTURES[arch]
    mean = spec.mean if mean is None else mean
    std = spec.std if std is None else std
    if len(mean) != spec.input_shape[0]:
        raise ValueError(f"mean and std must have {spec.input_shape[0]} entries, got {mean}, {std}")
    return nn.Sequential(ConstantNormalize(mean, std), network)


_NOISE_IN_NAME = re.compile(r"(?:^|[_\-.])noise_?(\d+\.\d+|\d{3}|\d)(?=$|[_\-.])")
"""``noise_0.25``, ``noise0.25``, ``noise_025`` or ``noise025`` (three digits: 0.25), ``noise_1``,
as a name or a part of it between ``_``, ``-`` or ``.``."""


def sigma_from_path(path: Path) -> float | None:
    """The training noise level that ``path`` names: in its file name, else in the nearest
    folder name, as ``noise_<sigma>`` (or ``noise<sigma>``, and ``noise025`` for 0.25).

    Cohen et al. release their models as ``models/<data set>/<arch>/noise_0.25/checkpoint.pth.tar``
    and the files do not record sigma; the releases built on their code keep those folder names
    or put them in the file name (``noise_0.25.pth.tar``, ``checkpoint_smoothed_noise025.pth.tar``).

    Example:
        >>> sigma_from_path(Path("models/imagenet/resnet50/noise_0.50/checkpoint.pth.tar"))
        0.5
        >>> sigma_from_path(Path("models/checkpoint_smoothed_noise025.pth.tar"))
        0.25
    """
    for name in reversed(Path(path).parts):
        found = _NOISE_IN_NAME.search(name)
        if found:
            digits = found.group(1)
            return int(digits) / 100 if len(digits) == 3 and "." not in digits else float(digits)
    return None


def load_cohen(
    payload: dict[str, Any],
    path: Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[nn.Sequential, dict[str, Any]]:
    """Rebuild and load a checkpoint in Cohen et al.'s format, read from ``path``.

    Args:
        payload: the dict read with ``torch.load(weights_only=True)``: ``arch``, ``state_dict``
            and optionally ``epoch``, ``optimizer`` and others, which are ignored.
        path: where it was read from (for sigma and messages).
        mean, std: the normalisation constants, if not the arch's data set's (see
            :func:`cohen_classifier`).

    Returns:
        (the classifier in eval mode on the CPU, its metadata): format ``"cohen2019"``,
        architecture, dataset, num_classes, input_shape, sigma (from the folder name, or None),
        mean, std, and epoch when the checkpoint records it.

    Raises:
        CheckpointError: if ``arch`` is unknown or the weights do not fit it.
    """
    arch = payload["arch"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: 'arch' must be a string, got {arch!r}")
    if arch not in PUBLISHED_ARCHITECTURES:
        raise CheckpointError(
            f"{path}: arch {arch!r} is not one we rebuild "
            f"({', '.join(PUBLISHED_ARCHITECTURES)}); load its state dict with `factory` naming "
            "the function that builds the network (the normalisation layer's '1.' prefix on its "
            "keys is dropped)"
        )
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(key, str) for key in state_dict):
        raise CheckpointError(
            f"{path}: 'state_dict' must be a dict of tensors under string keys, got "
            f"{type(state_dict).__name__} with keys such as {list(state_dict)[:2]!r}"
            if isinstance(state_dict, dict) else f"{path}: 'state_dict' must be a dict of tensors"
        )
    model = cohen_classifier(arch, mean, std)
    load_state_strictly(
        model, _match_data_parallel(state_dict, model.state_dict()), f"arch {arch!r}", path
    )
    spec = PUBLISHED_ARCHITECTURES[arch]
    normalize = model[0]
    assert isinstance(normalize, ConstantNormalize)
    metadata: dict[str, Any] = {
        "format": "cohen2019",
        "architecture": arch,
        "dataset": spec.dataset,
        "num_classes": spec.num_classes,
        "input_shape": list(spec.input_shape),
        "sigma": sigma_from_path(path),
        "mean": normalize.mean.flatten().tolist(),
        "std": normalize.std.flatten().tolist(),
    }
    if isinstance(payload.get("epoch"), int):
        metadata["epoch"] = payload["epoch"]
    return model.eval(), metadata


def _match_data_parallel(
    state_dict: dict[str, Any], expected: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Add or drop DataParallel's ``module.`` after ``1.`` where that alone makes the keys fit
    (a CIFAR model saved in DataParallel, or a ResNet-50 saved without it)."""
    if set(state_dict) == set(expected):
        return state_dict
    stripped = {re.sub(r"^1\.module\.", "1.", key): value for key, value in state_dict.items()}
    for candidate in (
        stripped,
        {re.sub(r"^1\.", "1.module.", key): value for key, value in stripped.items()},
    ):
        if set(candidate) == set(expected):
            return candidate
    return state_dict


def load_state_strictly(
    model: nn.Module, state_dict: dict[str, Any], description: str, path: Path
) -> None:
    """``model.load_state_dict(state_dict)`` with every key and shape checked, one-line errors.

    Batch norm's step counters (``num_batches_tracked``), which files from torch < 0.4.1 lack and
    eval mode does not use, are filled in with zeros where missing.

    Raises:
        CheckpointError: naming ``description``, the count and first few of the missing and
            unexpected keys, or the shapes that do not fit.
    """
    expected = model.state_dict()
    complex_keys = [key for key, value in state_dict.items()
                    if isinstance(value, torch.Tensor) and value.is_complex()]
    if complex_keys:  # load_state_dict would drop the imaginary part with a warning
        raise CheckpointError(
            f"{path}: its state_dict holds complex weights ({', '.join(complex_keys[:3])}), "
            f"which {description} cannot hold without dropping their imaginary part"
        )
    state_dict = {
        **{key: value for key, value in expected.items() if key.endswith("num_batches_tracked")},
        **state_dict,
    }
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: its state_dict does not fit {description}: {len(missing)} keys missing "
            f"(such as {missing[:3]}), {len(unexpected)} unexpected (such as {unexpected[:3]})"
        )
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"{path}: its weights do not fit {description} ({one_line(error)})"
        ) from error

"""Load a base classifier from any of the formats researchers have, detected from the file.

:func:`load_model` reads, from a path (or the name of a shipped model):

- our checkpoints (:mod:`encoders.checkpoint`), which carry their metadata;
- Cohen et al.'s format, ``{"arch", "state_dict", ...}``, used by the releases of Cohen et al.,
  SmoothAdv, Consistency, SmoothMix and CAT-RS (:mod:`encoders.published`);
- TorchScript archives (``torch.jit.save``), recognised by the ``constants.pkl`` in their zip;
- with ``factory="module:function"``, a state dict for the network that function returns: a
  user's own architecture. ``module`` is an importable module or a ``.py`` file, and literal
  keyword arguments may follow, as in ``"torchvision.models:resnet18(num_classes=10)"`` or
  ``"models/net.py:Net"``. The file holds the state dict itself or under ``"state_dict"``,
  ``"model_state_dict"``, ``"model"`` or ``"net"``; a ``module.`` prefix on every key
  (DataParallel) is dropped.

Pickles are read with ``torch.load(weights_only=True)``, which refuses to build arbitrary Python
objects, so a planted file cannot run code; TorchScript archives are read by ``torch.jit.load``,
which runs only the TorchScript program of the model. A factory, by contrast, is the user's own
Python code and runs when named. Every problem raises a one-line ValueError
(:class:`CheckpointError` for the files).

Normalisation is the model's first layer, so that noise and radii live in pixel space [0, 1].
``normalize=(mean, std)`` sets it where the file does not: it is prepended to TorchScript and
factory models that expect normalised input, and replaces the data set's constants of a Cohen
et al.-format model (e.g. std 1 for a model trained with SmoothAdv's mean-only first layer). Our
checkpoints carry their own and refuse it.

Example:
    >>> model, metadata = load_model("digits-sigma0.25")
    >>> metadata["format"], metadata["sigma"], metadata["num_classes"]
    ('encoders-checkpoint', 0.25, 10)
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from encoders.checkpoint import (
    FORMAT,
    check_checkpoint,
    check_zip_crc,
    classifier_from_state,
    read_torch_file,
    resolve,
)
from encoders.errors import CheckpointError, one_line
from encoders.published import ConstantNormalize, load_cohen, load_state_strictly, sigma_from_path

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")
_FACTORY_SPEC = re.compile(r"(?P<module>[^:]+):(?P<name>[A-Za-z_][\w.]*)(?:\((?P<arguments>.*)\))?")


class LoadedModel(NamedTuple):
    """A base classifier and what is known about it.

    Attributes:
        model: in eval mode on the CPU; (B, C, H, W) pixels in [0, 1] -> (B, K) logits.
        metadata: at least ``format`` (``"encoders-checkpoint"``, ``"cohen2019"``,
            ``"torchscript"`` or ``"state-dict"``), ``architecture`` (str), and ``dataset``
            (str), ``sigma`` (float, the training noise level), ``num_classes`` (int) and
            ``input_shape`` ([C, H, W]), each None where the file does not tell.
    """

    model: nn.Module
    metadata: dict[str, Any]


def load_model(
    source: str | os.PathLike,
    *,
    factory: str | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> LoadedModel:
    """Load a base classifier and its metadata, reading the file once.

    Args:
        source: a file in one of the formats of the module docstring, or a shipped model's name.
        factory: ``"module:function"`` (with optional literal keyword arguments) that builds the
            network whose state dict ``source`` holds.
        normalize: (mean, std), one entry per channel, std > 0: the first layer where the file
            does not define it (see the module docstring).

    Returns:
        A :class:`LoadedModel`.

    Raises:
        CheckpointError: if the file is missing, damaged, unsafe, of no known format, or its
            weights do not fit the architecture; ValueError for a bad factory or normalize.

    Example:
        >>> model, metadata = load_model("models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar")
        >>> metadata["architecture"], metadata["sigma"], metadata["input_shape"]
        ('cifar_resnet110', 0.25, [3, 32, 32])
    """
    path = resolve(source)
    mean_std = _check_normalize(normalize)
    if factory is not None:
        return _load_with_factory(path, factory, mean_std)
    if _is_torchscript(path):
        return _load_torchscript(path, mean_std)
    payload = read_torch_file(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        if mean_std is not None:
            raise ValueError(
                f"normalize does not apply to {path}: an {FORMAT} file has its own normalisation"
            )
        checkpoint = check_checkpoint(payload, path, "classifier")
        model = classifier_from_state(checkpoint["metadata"], checkpoint["state_dict"])
        return LoadedModel(model.eval(), {**checkpoint["metadata"], "format": FORMAT})
    if isinstance(payload, dict) and "arch" in payload and "state_dict" in payload:
        mean, std = mean_std or (None, None)
        return LoadedModel(*load_cohen(payload, path, mean, std))
    raise CheckpointError(
        f"{path} is not an {FORMAT} file, a Cohen et al. checkpoint (a dict with 'arch' and "
        f"'state_dict') or TorchScript; for the state dict of your own architecture, name the "
        f"function that builds it with factory='module:function'"
    )


def load_classifier(
    source: str | os.PathLike,
    *,
    factory: str | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> nn.Module:
    """The model of :func:`load_model`: in eval mode on the CPU, pixels in [0, 1] -> logits.

    Example:
        >>> load_classifier("digits-sigma0.25")(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return load_model(source, factory=factory, normalize=normalize).model


def _check_normalize(
    normalize: tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[list[float], list[float]] | None:
    if normalize is None:
        return None
    try:
        mean, std = ([float(value) for value in values] for values in normalize)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"normalize must be a pair (mean, std) of sequences of numbers, got {normalize!r}"
        ) from error
    finite = all(math.isfinite(value) for value in mean + std)
    if not mean or len(mean) != len(std) or not finite or min(std) <= 0:
        raise ValueError(
            f"normalize must be (mean, std) with one finite entry per channel in each and "
            f"std > 0, got {normalize!r}"
        )
    return mean, std


def _with_normalization(
    network: nn.Module, mean_std: tuple[list[float], list[float]] | None
) -> nn.Module:
    return network if mean_std is None else nn.Sequential(ConstantNormalize(*mean_std), network)


def _normalization_metadata(mean_std: tuple[list[float], list[float]] | None) -> dict[str, Any]:
    return {} if mean_std is None else {"mean": mean_std[0], "std": mean_std[1]}


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"cannot read {path}: damaged zip ({one_line(error)})") from error
    return any(name.split("/", 1)[-1] == "constants.pkl" for name in names)


def _load_torchscript(path: Path, mean_std: tuple[list[float], list[float]] | None) -> LoadedModel:
    check_zip_crc(path)  # an archive carries no digest; torch.jit.load checks no CRC
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript in a FutureWarning
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"cannot read TorchScript archive {path} ({one_line(error)})"
        ) from error
    metadata = {
        "format": "torchscript",
        "architecture": f"torchscript:{getattr(network, 'original_name', 'module')}",
        "dataset": None,
        "sigma": sigma_from_path(path),
        "num_classes": None,
        "input_shape": None,
        **_normalization_metadata(mean_std),
    }
    return LoadedModel(_with_normalization(network, mean_std).eval(), metadata)


def _load_with_factory(
    path: Path, spec: str, mean_std: tuple[list[float], list[float]] | None
) -> LoadedModel:
    network = build_from_factory(spec)
    if _is_torchscript(path):
        raise CheckpointError(f"{path} is a TorchScript archive: load it without a factory")
    state_dict = _fit_prefix(_state_dict_in(read_torch_file(path), path), network.state_dict())
    load_state_strictly(network, state_dict, f"the network of factory {spec!r}", path)
    metadata = {
        "format": "state-dict",
        "architecture": spec,
        "dataset": None,
        "sigma": sigma_from_path(path),
        "num_classes": None,
        "input_shape": None,
        **_normalization_metadata(mean_std),
    }
    return LoadedModel(_with_normalization(network, mean_std).eval(), metadata)


WRAPPER_PREFIXES = ("module.", "1.", "1.module.")
"""Prefixes that wrappers put before every key of a network's state dict: DataParallel's
``module.``, and Cohen et al.'s ``Sequential(NormalizeLayer, network)``, whose normalisation
layer saves no weights, so every key starts with ``1.`` (``1.module.`` in DataParallel)."""


def _fit_prefix(
    state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The state dict with a wrapper's prefix (:data:`WRAPPER_PREFIXES`) dropped where every key
    has it and dropping it makes the keys fit the network's; otherwise as it is."""
    if set(state_dict) == set(expected):
        return state_dict
    for prefix in sorted(WRAPPER_PREFIXES, key=len, reverse=True):
        if all(key.startswith(prefix) for key in state_dict):
            stripped = {key.removeprefix(prefix): value for key, value in state_dict.items()}
            if set(stripped) <= set(expected):
                return stripped
    return state_dict


def _state_dict_in(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    def is_state_dict(value: Any) -> bool:
        return (
            isinstance(value, dict)
            and len(value) > 0
            and all(isinstance(key, str) for key in value)
            and all(isinstance(tensor, torch.Tensor) for tensor in value.values())
        )

    if is_state_dict(payload):
        return payload
    for key in STATE_DICT_KEYS:
        if isinstance(payload, dict) and is_state_dict(payload.get(key)):
            return payload[key]
    raise CheckpointError(
        f"{path} holds no state dict: a dict of tensors, or one under any of {STATE_DICT_KEYS}"
    )


def build_from_factory(spec: str) -> nn.Module:
    """Call the factory that ``spec`` names and return the network it builds.

    Args:
        spec: ``"module:function"`` or ``"module:function(key=value, ...)"`` with literal values
            (numbers, strings, tuples, ...); ``module`` is a dotted module name importable from
            the Python path, or a path to a ``.py`` file. ``function`` may be a dotted attribute
            path, such as a class or ``Class.build``.

    Returns:
        The ``torch.nn.Module`` the call returns.

    Raises:
        ValueError: naming ``factory`` if the spec is malformed, its module or function cannot be
            found, its arguments are not literals, or the call fails or returns no Module.

    Example:
        >>> build_from_factory("torchvision.models:resnet18(num_classes=10)").fc.out_features
        10
    """
    found = _FACTORY_SPEC.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if found is None:
        raise ValueError(
            f"factory must be 'module:function' or 'module:function(key=value, ...)', got {spec!r}"
        )
    arguments, keywords = _literal_arguments(found.group("arguments") or "", spec)
    function = _resolve_function(found.group("module"), found.group("name"), spec)
    try:
        network = function(*arguments, **keywords)
    except (Exception, SystemExit) as error:  # the user's code: any failure is one line
        raise ValueError(
            f"factory {spec!r} raised {type(error).__name__}: {one_line(error)}"
        ) from error
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"factory {spec!r} returned a {type(network).__name__}, not a torch.nn.Module"
        )
    return network


def _literal_arguments(text: str, spec: str) -> tuple[list[Any], dict[str, Any]]:
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            raise ValueError("not one argument list")
        arguments = [ast.literal_eval(node) for node in call.args]
        keywords = {node.arg: ast.literal_eval(node.value) for node in call.keywords
                    if node.arg is not None}
        if len(keywords) != len(call.keywords):
            raise ValueError(f"factory {spec!r}: arguments must be literals, not **unpacking")
    except (SyntaxError, ValueError, TypeError) as error:
        raise ValueError(
            f"factory {spec!r}: arguments must be literals such as num_classes=10 "
            f"({one_line(error)})"
        ) from error
    return arguments, keywords


def _resolve_function(module_name: str, name: str, spec: str) -> Callable[..., Any]:
    """The callable ``name`` of a module, importing it (a ``.py`` file as Python runs a script:
    its folder goes first on the import path, so it imports its neighbours)."""
    if module_name.startswith("."):
        raise ValueError(
            f"factory {spec!r}: {module_name!r} is a relative module name; name the module in "
            "full (package.module) or give the path of its .py file"
        )
    if module_name.endswith(".py") and not Path(module_name).is_file():
        raise ValueError(f"factory {spec!r}: no file {module_name!r}")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            folder = str(file.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"not a Python module: {module_name}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as error:
        raise ValueError(
            f"factory {spec!r}: cannot import {module_name!r} ({one_line(error)})"
        ) from error
    except (Exception, SystemExit) as error:  # raised by the module's own code as it ran
        raise ValueError(
            f"factory {spec!r}: importing {module_name!r} raised {type(error).__name__}: "
            f"{one_line(error)}"
        ) from error
    try:
        function = functools.reduce(getattr, name.split("."), module)
    except AttributeError as error:
        raise ValueError(f"factory {spec!r}: {module_name!r} has no {name!r}") from error
    if not callable(function):
        raise ValueError(f"factory {spec!r}: {name!r} is a {type(function).__name__}, not callable")
    return function

"""Checkpoints: one file format for classifiers and pre-training runs, and the shipped models.

A checkpoint is a ``torch.save``-d dict of plain types and tensors only::

    {"format": "encoders-checkpoint", "format_version": 1, "kind": "classifier" | "simclr",
     "metadata": {"architecture", "dataset", "sigma", "num_classes", "input_shape", "recipe",
                  "versions", ...},
     "state_dict": {...}, "training_state": {...} (optional: optimizer, epoch, RNG, to resume),
     "sha256": "<hex>"}

``sha256`` is the digest of everything else in the file (:func:`content_digest`), recorded when
saving and verified when loading: the zip container that ``torch.save`` writes checks no CRC when
read, so without it a few flipped bytes inside the tensor data would load as altered weights.
The shipped models carry it too. A zip-format file without it (a checkpoint written before the
digest existed, Cohen et al.'s format, a state dict, a TorchScript archive) has its members'
CRC-32 checked instead (:func:`check_zip_crc`), which catches the same damage.

It is written atomically (a temporary file in the same folder, then ``os.replace``) and read
with ``torch.load(weights_only=True)``, which refuses to build arbitrary Python objects, so
loading a planted file cannot run code. Every problem raises :class:`CheckpointError` (a
ValueError).

Weights may be stored in half precision (:func:`half_precision_copy`: a CIFAR ResNet-18 takes
22 MB instead of 45 MB); they are cast to float32 when loaded, so the model that runs is exactly
the stored one. Shipped models are the ``.pt`` files in ``encoders/pretrained/``, found by name.

Example:
    >>> read_metadata("digits-sigma0.25")["sigma"]
    0.25
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import pickletools
import platform
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torchvision

from certify.files import write_atomically
from encoders.backbones import Classifier, build_classifier
from encoders.errors import CheckpointError, one_line

FORMAT = "encoders-checkpoint"
FORMAT_VERSION = 1
DIGEST_KEY = "sha256"
ENTRIES = ("format", "format_version", "kind", "metadata", "state_dict", "training_state",
           DIGEST_KEY)
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
REQUIRED_METADATA = {
    "architecture": str,
    "dataset": str,
    "sigma": float,
    "num_classes": int,
    "input_shape": list,
    "recipe": dict,
    "versions": dict,
}


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint's metadata."""
    return {
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "format_version": str(FORMAT_VERSION),
    }


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    metadata: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    training_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically: a reader sees the old file or the new one, never a torn one.

    Args:
        path: destination file; its folder is created if needed.
        kind: ``"classifier"`` (loadable by :func:`encoders.loading.load_classifier`) or
            ``"simclr"`` (pre-training).
        metadata: must hold the keys of :data:`REQUIRED_METADATA` with those types.
        state_dict: the model's tensors (moved to the CPU before saving).
        training_state: optional resumable state (plain types and tensors only).

    Raises:
        ValueError: if kind or the metadata is invalid.
    """
    if kind not in ("classifier", "simclr"):
        raise ValueError(f"kind must be 'classifier' or 'simclr', got {kind!r}")
    _check_metadata(metadata, ValueError)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "metadata": metadata,
        "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    payload[DIGEST_KEY] = content_digest(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: torch.save(payload, file))


def _check_metadata(metadata: Any, error: type[ValueError]) -> None:
    if not isinstance(metadata, dict):
        raise error("checkpoint metadata must be a dict")
    for key, expected in REQUIRED_METADATA.items():
        value = metadata.get(key)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise error(f"checkpoint metadata {key!r} must be a {expected.__name__}, got {value!r}")
    if not (math.isfinite(metadata["sigma"]) and metadata["sigma"] >= 0):
        raise error(
            f"checkpoint metadata 'sigma' must be finite and >= 0, got {metadata['sigma']!r}"
        )
    _check_shapes(metadata, error)


def _check_shapes(metadata: dict[str, Any], error: type[ValueError]) -> None:
    """input_shape must be [C, H, W] of integers >= 1 and num_classes an integer >= 2."""
    shape = metadata["input_shape"]
    if len(shape) != 3 or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in shape
    ):
        raise error(
            f"checkpoint metadata 'input_shape' must be [C, H, W] of integers >= 1, got {shape!r}"
        )
    if metadata["num_classes"] < 2:
        raise error(
            f"checkpoint metadata 'num_classes' must be an integer >= 2, "
            f"got {metadata['num_classes']!r}"
        )


def content_digest(payload: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint's content: every entry but the digest itself, in order.

    Tensors count by dtype, shape and bytes; dicts, lists and tuples by their items in order;
    anything else by its type and ``repr`` (exact for the ints, floats and strings a checkpoint
    holds), so that a value changed anywhere changes the digest.
    """
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in payload.items() if key != DIGEST_KEY})
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())  # its bytes, any dtype
    elif isinstance(value, dict):
        hasher.update(f"dict {len(value)}\n".encode())
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__} {len(value)}\n".encode())
        for item in value:
            _feed(hasher, item)
    else:
        text = repr(value)
        hasher.update(f"{type(value).__name__} {len(text)} {text}\n".encode())


def _verify_digest(payload: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError, calling ``path`` damaged, unless its content matches its digest.

    A checkpoint without a digest predates it and is accepted; an entry this format never writes
    can only come from damage to the file.
    """
    unknown = sorted(str(key) for key in payload if key not in ENTRIES)
    if unknown:
        raise CheckpointError(
            f"{path} is damaged: it holds entries {', '.join(unknown)} that no checkpoint has"
        )
    if DIGEST_KEY in payload and payload[DIGEST_KEY] != content_digest(payload):
        raise CheckpointError(
            f"{path} is damaged: its content does not match the SHA-256 digest recorded when it "
            "was saved (bytes changed on disk or in transfer); copy or train it again"
        )


def resolve(source: str | os.PathLike) -> Path:
    """The file for a checkpoint path or a shipped name (see :func:`list_pretrained`).

    Raises:
        CheckpointError: if it names neither an existing file nor a shipped model.
    """
    path = Path(source)
    if path.is_file():
        return path
    shipped = PRETRAINED_DIR / f"{source}.pt"
    if isinstance(source, str) and os.sep not in source and shipped.is_file():
        return shipped
    raise CheckpointError(
        f"no checkpoint file {str(source)!r} and no shipped model of that name "
        f"(shipped: {', '.join(list_pretrained()) or 'none'})"
    )


def load_checkpoint(source: str | os.PathLike, kind: str | None = "classifier") -> dict[str, Any]:
    """Read and validate a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Args:
        source: checkpoint path or shipped name.
        kind: the kind it must be, or None for any.

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        CheckpointError: if it is missing, damaged, of another format or kind, or holds
            arbitrary pickled objects (refused, never executed).
    """
    path = resolve(source)
    return check_checkpoint(read_torch_file(path), path, kind)


def check_zip_crc(path: Path) -> None:
    """Refuse a zip-format file (what ``torch.save`` and ``torch.jit.save`` write) in which a
    member's bytes do not match the CRC-32 the archive records for them; other files pass.

    torch's zip reader checks no CRC, so without this a flipped byte inside the tensor data loads
    as an altered weight. It reads the whole file once (about 0.1 s for 100 MB).

    Raises:
        CheckpointError: naming the file and the damaged member.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: damaged zip ({one_line(error)})") from error
    if damaged is not None:
        raise CheckpointError(
            f"{path} is damaged: its member {damaged} does not match the CRC-32 recorded for it "
            "(bytes changed on disk or in transfer); copy or download it again"
        )


def read_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line errors; a file that
    carries no digest of our format has its zip CRCs checked (:func:`check_zip_crc`).

    Raises:
        CheckpointError: if the file is damaged or not a torch file, or holds arbitrary pickled
            objects (refused, never executed).
    """
    payload = _torch_load(path)
    if not (isinstance(payload, dict) and DIGEST_KEY in payload):
        check_zip_crc(path)
    return payload


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        name = found.group(1) if found else _pickled_global(path)
        if name is None:  # not a pickle of objects at all: random bytes, a truncated file
            raise CheckpointError(
                f"cannot read checkpoint {path}: damaged or not a torch file"
            ) from error
        raise CheckpointError(
            f"refused {path}: it holds arbitrary pickled objects such as {name}, not just "
            "tensors and plain data, and loading them could run code, so it was not loaded; "
            "for a whole pickled model, re-save its weights (torch.save(model.state_dict(), "
            "path)) and name the function that builds the network with `factory`"
        ) from error
    except Exception as error:  # the unpickler raises many kinds of error on malformed bytes
        raise CheckpointError(
            f"cannot read checkpoint {path}: damaged or not a torch file ({one_line(error)})"
        ) from error


def _pickled_global(path: Path) -> str | None:
    """A class or function that a well-formed pickle names (in a zip, its ``data.pkl``), read
    without running anything: the first that is not one of torch's own or ``collections``'s;
    None if the bytes are no well-formed pickle or name none."""
    names: list[str] = []
    try:
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(name for name in archive.namelist() if name.endswith("data.pkl"))
                data = archive.read(member)
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(argument, str):
                strings.append(argument)
    except (OSError, ValueError, StopIteration, zipfile.BadZipFile, EOFError):
        return None
    foreign = [name for name in names if not name.startswith(("torch.", "collections."))]
    return foreign[0] if foreign else names[0] if names else None


def check_checkpoint(payload: Any, path: Path, kind: str | None) -> dict[str, Any]:
    """Validate what :func:`read_torch_file` read from ``path`` as a checkpoint of ``kind``.

    Raises:
        CheckpointError: if it is of another format or kind, or its metadata is invalid.
    """
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an {FORMAT} file")
    _verify_digest(payload, path)
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {payload.get('format_version')!r}; this "
            f"version of encoders reads {FORMAT_VERSION}"
        )
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path} is a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no state_dict")
    try:
        _check_metadata(payload.get("metadata"), CheckpointError)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return payload


def read_metadata(source: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint (path or shipped name) of any kind.

    Returns:
        A dict with at least architecture (str), dataset (str), sigma (float, training noise),
        num_classes (int), input_shape ([C, H, W]), recipe (dict) and versions (dict).

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    return load_checkpoint(source, kind=None)["metadata"]


def float32_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every floating-point tensor (float16, bfloat16, ...) as float32;
    integer tensors (batch-norm counters) unchanged."""
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict.items()
    }


def half_precision_copy(
    source: str | os.PathLike,
    out: str | os.PathLike,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Copy a checkpoint with its floating-point weights in float16, about half the size.

    float16 keeps 11 significant bits (relative rounding error at most 2**-11) over magnitudes up
    to 65504; the copy is a slightly different model, which
    :func:`encoders.loading.load_classifier` runs exactly (cast to float32). Certify the copy,
    not the original, when the copy is what ships.

    Args:
        source: checkpoint path or shipped name, of any kind.
        out: the copy (written atomically).
        training_state: the training state to keep in the copy (default: none).

    Returns:
        ``out`` as a Path.

    Raises:
        CheckpointError: if the source is unreadable, or a weight exceeds float16's range.
    """
    payload = load_checkpoint(source, kind=None)
    half = {}
    for key, value in payload["state_dict"].items():
        if value.is_floating_point():
            converted = value.to(torch.float16)
            if bool((torch.isfinite(value) & ~torch.isfinite(converted)).any()):
                raise CheckpointError(f"weight {key} of {source} exceeds the range of float16")
            value = converted
        half[key] = value
    save_checkpoint(out, payload["kind"], payload["metadata"], half, training_state)
    return Path(out)


def classifier_from_state(
    metadata: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> Classifier:
    """Rebuild a :class:`Classifier` from metadata and load its weights.

    Raises:
        CheckpointError: if the weights do not fit the architecture the metadata names.
    """
    channels = metadata["input_shape"][0]
    try:
        model = build_classifier(
            metadata["architecture"],
            metadata["num_classes"],
            metadata["input_shape"],
            [0.0] * channels,
            [1.0] * channels,
        )
        model.load_state_dict(float32_state(state_dict))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise CheckpointError(
            f"checkpoint weights do not fit its metadata ({one_line(error)})"
        ) from error
    return model


def portable_copy(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The smallest file an unfinished training run resumes from on another machine: float16
    weights (:func:`half_precision_copy`) and the training state without the optimizer's, so
    the resumed run restarts its momentum (SGD) or moment estimates (Adam) and nothing else.

    Raises:
        CheckpointError: as :func:`half_precision_copy`, or if the source has no training state.
    """
    state = load_checkpoint(source, kind=None).get("training_state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds no training state to resume from")
    light = {key: value for key, value in state.items() if key != "optimizer"}
    return half_precision_copy(source, out, light)


def list_pretrained() -> list[str]:
    """Names of the shipped models, e.g. ``["digits-sigma0.12", "digits-sigma0.25", ...]``."""
    return sorted(path.stem for path in PRETRAINED_DIR.glob("*.pt"))


def pretrained_name(dataset: str, sigma: float) -> str:
    """The shipped model for a data set and training noise level.

    Example: ``pretrained_name("digits", 0.25)`` is ``"digits-sigma0.25"``.

    Raises:
        CheckpointError: (a ValueError) naming sigma and the shipped levels when none fits.
    """
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma):
        name = f"{dataset}-sigma{sigma:.2f}"
        if math.isclose(float(f"{sigma:.2f}"), sigma, abs_tol=1e-9) and name in list_pretrained():
            return name
    shipped = (
        ", ".join(name for name in list_pretrained() if name.startswith(f"{dataset}-")) or "none"
    )
    raise CheckpointError(
        f"no shipped model for dataset {dataset!r} at sigma={sigma!r} (shipped: {shipped})"
    )

"""Damaged and malformed checkpoints: a digest of the content,
recorded when saving and verified when loading, and one-line errors for malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import encoders
from encoders.backbones import build_classifier
from encoders.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, versions

ENTRIES_BEFORE_THE_DIGEST = ("format", "format_version", "kind", "metadata", "state_dict",
                             "training_state")


def _without_digest(payload: dict) -> dict:
    """The payload as a checkpoint written before the digest was recorded would hold it."""
    return {key: value for key, value in payload.items() if key in ENTRIES_BEFORE_THE_DIGEST}


def _metadata() -> dict:
    return {"architecture": "small_cnn", "dataset": "digits", "sigma": 0.25, "num_classes": 10,
            "input_shape": [1, 8, 8], "recipe": {"epochs": 1}, "versions": versions()}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, [1, 8, 8], [0.3], [0.4])
    path = tmp_path / "model.pt"
    save_checkpoint(path, "classifier", _metadata(), model.state_dict(),
                    {"epoch": 3, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}},
                                               "param_groups": [{"lr": 0.1, "betas": (0.9, 1)}]}})
    return path


def test_a_checkpoint_records_the_digest_of_its_content(saved) -> None:
    from encoders.checkpoint import DIGEST_KEY, content_digest

    payload = torch.load(saved, weights_only=True)
    assert payload[DIGEST_KEY] == content_digest(payload)
    assert len(payload[DIGEST_KEY]) == 64  # SHA-256 in hexadecimal
    assert load_checkpoint(saved)["metadata"]["sigma"] == 0.25


@pytest.mark.parametrize("tensor", ["head.weight", "encoder.0.weight"])
@pytest.mark.parametrize("bit", [0, 3, 7])
def test_flipped_bits_in_the_weights_are_reported_damaged(saved, tmp_path, tensor,
                                                                 bit) -> None:
    weights = torch.load(saved, weights_only=True)["state_dict"][tensor]
    data = bytearray(saved.read_bytes())
    start = bytes(data).find(weights.numpy().tobytes())
    assert start > 0  # the zip stores tensors uncompressed, and checks no CRC when reading
    data[start + 5] ^= 1 << bit
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged") as raised:
        encoders.load_classifier(damaged)
    assert str(damaged) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("change", ["sigma", "training_state", "digest", "new-entry"])
def test_content_changed_under_the_recorded_digest_is_damaged(saved, change) -> None:
    from encoders.checkpoint import DIGEST_KEY

    payload = torch.load(saved, weights_only=True)
    if change == "sigma":
        payload["metadata"]["sigma"] = 0.5
    elif change == "training_state":
        payload["training_state"]["optimizer"]["param_groups"][0]["lr"] = 0.2
    elif change == "digest":
        payload[DIGEST_KEY] = "0" * 64
    else:
        payload["extra"] = torch.zeros(1)
    torch.save(payload, saved)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(saved, kind=None)


def test_checkpoints_that_predate_the_digest_still_load(saved) -> None:
    torch.save(_without_digest(torch.load(saved, weights_only=True)), saved)
    assert load_checkpoint(saved)["metadata"]["sigma"] == 0.25
    for name in encoders.list_pretrained():
        shape = encoders.read_metadata(name)["input_shape"]
        assert encoders.load_classifier(name)(torch.rand(2, *shape)).shape == (2, 10)


def test_the_shipped_models_carry_their_digest() -> None:
    from encoders.checkpoint import DIGEST_KEY, PRETRAINED_DIR, content_digest

    for name in encoders.list_pretrained():
        payload = torch.load(PRETRAINED_DIR / f"{name}.pt", weights_only=True)
        assert payload[DIGEST_KEY] == content_digest(payload), name


def _flip_a_weight_bit(path: Path, weights: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    start = bytes(data).find(weights.detach().numpy().tobytes())
    assert start > 0, "the weight's bytes are stored verbatim in the zip"
    data[start + 9] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["predating-the-digest", "cohen", "state-dict", "torchscript"])
def test_flipped_bits_in_a_zip_file_without_a_digest_fail_its_crc(saved, tmp_path, kind) -> None:
    from encoders.published import cohen_classifier

    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, [1, 8, 8], [0.3], [0.4]).eval()
    path, factory = tmp_path / f"{kind}.pt", None
    weights = model.state_dict()["head.weight"]
    if kind == "predating-the-digest":
        torch.save(_without_digest(torch.load(saved, weights_only=True)), path)
        weights = torch.load(saved, weights_only=True)["state_dict"]["head.weight"]
    elif kind == "cohen":
        cohen = cohen_classifier("cifar_resnet20")
        torch.save({"arch": "cifar_resnet20", "state_dict": cohen.state_dict()}, path)
        weights = cohen.state_dict()["1.fc.weight"]
    elif kind == "state-dict":
        torch.save(model.state_dict(), path)
        factory = "encoders.backbones:build_classifier('small_cnn', 10, [1, 8, 8], [0.3], [0.4])"
    else:
        torch.jit.save(torch.jit.trace(model, torch.rand(1, 1, 8, 8)), str(path))
    encoders.load_model(path, factory=factory)  # intact, it loads
    _flip_a_weight_bit(path, weights)
    with pytest.raises(CheckpointError, match="CRC") as raised:
        encoders.load_model(path, factory=factory)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("content", [b"q\xff", b"Nr", b"PK", b"\x80\x02", b""])
def test_tiny_files_are_one_line_checkpoint_errors(tmp_path, content) -> None:
    path = tmp_path / "tiny.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="damaged or not a torch file") as raised:
        load_checkpoint(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("input_shape", []), ("input_shape", [1, 8]), ("input_shape", [0, 8, 8]),
     ("input_shape", [1, "8", 8]), ("input_shape", [1, 8.0, 8]), ("input_shape", [1, True, 8]),
     ("num_classes", 1), ("num_classes", 0), ("num_classes", -3)],
)
def test_malformed_metadata_is_refused_naming_the_file(saved, key, value) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["metadata"][key] = value
    torch.save(_without_digest(payload), saved)  # or the digest would call it damaged first
    with pytest.raises(CheckpointError, match=key) as raised:
        encoders.load_classifier(saved)
    assert str(saved) in str(raised.value)
    with pytest.raises(ValueError, match=key):  # and it cannot be saved either
        save_checkpoint(saved.with_name("again.pt"), "classifier", payload["metadata"],
                        payload["state_dict"])

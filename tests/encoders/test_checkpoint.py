"""Checkpoint format: round trip, atomic writes, refusal of pickled objects, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import encoders
from encoders.backbones import build_classifier
from encoders.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, versions


def _metadata(sigma: float = 0.25) -> dict:
    return {
        "architecture": "small_cnn",
        "dataset": "digits",
        "sigma": sigma,
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "recipe": {"epochs": 1},
        "versions": versions(),
    }


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 10, [1, 8, 8], [0.3], [0.4]).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, "classifier", _metadata(), model.state_dict())
    return path, model


def test_round_trip_gives_identical_logits_in_eval_mode(saved):
    path, model = saved
    loaded = encoders.load_classifier(path)
    assert not loaded.training
    batch = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(batch), model(batch))
    assert torch.equal(loaded.normalize.mean.flatten(), torch.tensor([0.3]))
    metadata = encoders.read_metadata(str(path))
    assert metadata["sigma"] == 0.25 and metadata["input_shape"] == [1, 8, 8]
    assert set(metadata["versions"]) >= {"torch", "torchvision"}


def test_save_leaves_no_temporary_file_and_replaces_atomically(saved):
    path, model = saved
    save_checkpoint(path, "classifier", _metadata(0.5), model.state_dict())
    assert sorted(os.listdir(path.parent)) == ["model.pt"]
    assert encoders.read_metadata(path)["sigma"] == 0.5


class _Exploit:
    """An object whose unpickling would call os.system: a planted checkpoint."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoint_with_pickled_object_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "encoders-checkpoint", "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="arbitrary pickled objects"):
        encoders.load_classifier(path)
    assert not (tmp_path / "PWNED").exists()


def test_damaged_and_foreign_files_raise_one_line_value_errors(saved, tmp_path):
    path, _ = saved
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:500])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for bad in (truncated, foreign, tmp_path / "missing.pt", "no-such-model"):
        with pytest.raises(ValueError) as error:
            encoders.load_classifier(bad)
        assert "\n" not in str(error.value)


def test_random_bytes_are_called_damaged_not_dangerous(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged or not a torch file"):
        encoders.load_classifier(garbage)


def test_weights_that_do_not_fit_the_metadata_are_a_checkpoint_error(saved, tmp_path):
    path, model = saved
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, "classifier", {**_metadata(), "num_classes": 3}, model.state_dict())
    with pytest.raises(CheckpointError, match="do not fit"):
        encoders.load_classifier(wrong)


def test_invalid_metadata_is_refused_on_save(saved, tmp_path):
    _, model = saved
    with pytest.raises(ValueError, match="sigma"):
        save_checkpoint(
            tmp_path / "x.pt", "classifier", {**_metadata(), "sigma": "high"}, model.state_dict()
        )
    with pytest.raises(ValueError, match="kind"):
        save_checkpoint(tmp_path / "x.pt", "other", _metadata(), model.state_dict())


def test_simclr_checkpoint_is_not_a_classifier(saved, tmp_path):
    _, model = saved
    path = tmp_path / "pre.pt"
    save_checkpoint(path, "simclr", _metadata(0.0), model.state_dict())
    assert encoders.read_metadata(path)["sigma"] == 0.0
    with pytest.raises(CheckpointError, match="expected 'classifier'"):
        encoders.load_classifier(path)
    assert load_checkpoint(path, kind=None)["kind"] == "simclr"


def test_pretrained_name_names_sigma_when_none_is_shipped():
    with pytest.raises(ValueError, match="sigma=0.3"):
        encoders.pretrained_name("digits", 0.3)
    with pytest.raises(ValueError, match="sigma"):
        encoders.pretrained_name("cifar10", 0.25)


def test_half_precision_copy_loads_as_the_rounded_model_at_half_the_size(saved, tmp_path):
    path, model = saved
    half = encoders.checkpoint.half_precision_copy(path, tmp_path / "half.pt")
    assert half.stat().st_size < 0.6 * path.stat().st_size
    stored = load_checkpoint(half)["state_dict"]
    assert stored["head.weight"].dtype == torch.float16
    assert stored["encoder.1.num_batches_tracked"].dtype == torch.int64  # counters unchanged
    rounded = build_classifier("small_cnn", 10, [1, 8, 8], [0.3], [0.4]).eval()
    rounded.load_state_dict(
        {key: value.half().float() if value.is_floating_point() else value
         for key, value in model.state_dict().items()}
    )
    loaded = encoders.load_classifier(half)
    assert next(loaded.parameters()).dtype == torch.float32
    batch = torch.rand(4, 1, 8, 8)
    assert torch.equal(loaded(batch), rounded(batch))
    assert torch.allclose(loaded(batch), model(batch), rtol=1e-2, atol=1e-3)


def test_half_precision_copy_refuses_weights_beyond_float16(saved, tmp_path):
    path, model = saved
    state = model.state_dict()
    state["head.bias"] = state["head.bias"] + 1e6
    save_checkpoint(tmp_path / "big.pt", "classifier", _metadata(), state)
    with pytest.raises(CheckpointError, match="head.bias"):
        encoders.checkpoint.half_precision_copy(tmp_path / "big.pt", tmp_path / "half.pt")


def test_a_shipped_half_precision_model_is_found_by_name(saved, tmp_path, monkeypatch):
    path, model = saved
    shipped = tmp_path / "pretrained"
    encoders.checkpoint.half_precision_copy(path, shipped / "cifar10-rush-sigma0.25.pt")
    monkeypatch.setattr(encoders.checkpoint, "PRETRAINED_DIR", shipped)
    assert encoders.list_pretrained() == ["cifar10-rush-sigma0.25"]
    loaded = encoders.load_classifier("cifar10-rush-sigma0.25")
    batch = torch.rand(2, 1, 8, 8)
    assert torch.allclose(loaded(batch), model(batch), rtol=1e-2, atol=1e-3)

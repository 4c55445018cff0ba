"""A results file holds the rows of one model on one set of images: what changes a row's meaning
is recorded beside it and compared on resume and audit, and --overwrite removes only what its run
made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from command_output import one_line_error
from PIL import Image

import certify.runner as runner
from certify.cli.audit import main as audit_main
from certify.cli.certify import main
from certify.results import settings_path
from encoders.backbones import build_classifier
from encoders.checkpoint import save_checkpoint, versions
from encoders.data import load_dataset
from encoders.finetune import FinetuneConfig, finetune

FACTORY = '''
import torch


class Net(torch.nn.Module):
    def __init__(self, flip=False):
        super().__init__()
        self.flip = flip
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return -logits if self.flip else logits
'''


@pytest.fixture
def factory_model(tmp_path) -> tuple[Path, Path]:
    """(state dict file, factory module) of a linear digits network."""
    module = tmp_path / "nets.py"
    module.write_text(FACTORY)
    torch.manual_seed(0)
    weights = tmp_path / "net_sd.pt"
    torch.save({"fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)}, weights)
    return weights, module


def small_run(out: Path, *extra: str) -> list[str]:
    return ["--sigma", "0.25", "--n0", "10", "--n", "50", "--batch", "50", "--max", "3",
            "--device", "cpu", "--quiet", "--out", str(out), *extra]


def image_folder(root: Path, classes: tuple[str, ...], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        for i in range(2):
            path = root / "test" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(path)
    return root


def rgb_checkpoint(path: Path, classes: list[str] | None = None) -> Path:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, (3, 8, 8), [0.5] * 3, [0.25] * 3)
    metadata = {"architecture": "small_cnn", "dataset": "folder", "sigma": 0.25,
                "num_classes": 3, "input_shape": [3, 8, 8], "recipe": {"test": True},
                "versions": versions()}
    if classes is not None:
        metadata["classes"] = classes
    save_checkpoint(path, "classifier", metadata, model.state_dict())
    return path


@pytest.mark.parametrize("change", [
    ("--model-factory", "{module}:Net", "--model-factory", "{module}:Net(flip=True)"),
    ("--normalize", "0.9 0.1", None, None),
])
def test_resuming_with_another_factory_or_normalisation_is_refused(factory_model, tmp_path,
                                                                   capsys, change):
    weights, module = factory_model
    out = tmp_path / "run.tsv"
    first_flag, first_value, second_flag, second_value = change
    common = ["--model", str(weights), "--dataset", "digits"]
    factory = ["--model-factory", f"{module}:Net"]
    first = [first_flag, *first_value.format(module=module).split()]
    if first_flag != "--model-factory":
        first = factory + first
    assert main(small_run(out, *common, *first)) == 0
    capsys.readouterr()
    second = factory if second_flag is None else [second_flag, second_value.format(module=module)]
    assert main(small_run(out, *common, *second)) == 2
    assert ("model_factory" if second_flag else "normalize") in one_line_error(capsys)
    assert len(out.read_text().splitlines()) == 4  # the first run's rows, nothing mixed in


def test_resuming_on_another_data_root_is_refused(tmp_path, capsys):
    model = rgb_checkpoint(tmp_path / "rgb.pt")
    first = image_folder(tmp_path / "a", ("ant", "bee", "cat"), seed=0)
    second = image_folder(tmp_path / "b", ("ant", "bee", "cat"), seed=1)
    out = tmp_path / "run.tsv"
    data = ["--model", str(model), "--dataset", "folder", "--data-root"]
    assert main(small_run(out, *data, str(first))) == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n")  # as a killed run leaves it
    capsys.readouterr()
    assert main(small_run(out, *data, str(second))) == 2
    error = one_line_error(capsys)
    assert "data_root" in error and "data_sha256" in error
    settings = json.loads(settings_path(out).read_text())
    assert settings["data_root"] == str(first.resolve())
    assert settings["classes"] == ["ant", "bee", "cat"]
    # The same folder, other pixels under the same file names: the fingerprint differs too.
    image_folder(first, ("ant", "bee", "cat"), seed=2)
    assert main(small_run(out, *data, str(first))) == 2
    assert "data_sha256" in one_line_error(capsys)


def test_the_audit_refuses_certificates_made_on_another_data_root(tmp_path, capsys):
    model = rgb_checkpoint(tmp_path / "rgb.pt")
    first = image_folder(tmp_path / "a", ("ant", "bee", "cat"), seed=0)
    second = image_folder(tmp_path / "b", ("ant", "bee", "cat"), seed=1)
    certificates = tmp_path / "certs.tsv"
    data = ["--model", str(model), "--dataset", "folder", "--data-root"]
    assert main(small_run(certificates, *data, str(first))) == 0
    capsys.readouterr()
    audit = ["--sigma", "0.25", "--n0", "10", "--n", "50", "--predict-n", "50", "--batch", "50",
             "--steps", "1", "--eot-samples", "2", "--max", "3", "--device", "cpu", "--quiet",
             "--certificates", str(certificates), "--out", str(tmp_path / "audit.tsv"), *data]
    assert audit_main([*audit, str(second)]) == 2
    error = one_line_error(capsys)
    assert "data_root" in error and "images" in error
    assert audit_main([*audit, str(first)]) == 0


def test_a_model_of_other_class_names_is_refused(tmp_path, capsys):
    model = rgb_checkpoint(tmp_path / "rgb.pt", classes=["cat", "dog", "fox"])
    data = image_folder(tmp_path / "data", ("cat", "fox", "owl"), seed=0)
    assert main(small_run(tmp_path / "run.tsv", "--model", str(model), "--dataset", "folder",
                          "--data-root", str(data))) == 2
    error = one_line_error(capsys)
    assert "cat, dog, fox" in error and "cat, fox, owl" in error
    image_folder(tmp_path / "same", ("cat", "dog", "fox"), seed=0)
    assert main(small_run(tmp_path / "same.tsv", "--model", str(model), "--dataset", "folder",
                          "--data-root", str(tmp_path / "same"))) == 0


def test_training_records_the_class_names_of_an_image_folder(tmp_path):
    root = image_folder(tmp_path / "data", ("cat", "dog", "fox"), seed=0)
    for name in ("cat", "dog", "fox"):
        (root / "train").mkdir(exist_ok=True)
        (root / "test" / name).rename(root / "train" / name)
    train = load_dataset("folder", "train", root)
    assert train.classes == ("cat", "dog", "fox")
    config = FinetuneConfig(sigma=0.25, out=str(tmp_path / "m.pt"), dataset="folder",
                            root=str(root), architecture="small_cnn", epochs=1, batch_size=2,
                            device="cpu")
    written = finetune(config, train=train)
    metadata = torch.load(written, weights_only=True)["metadata"]
    assert metadata["classes"] == ["cat", "dog", "fox"]


def test_overwrite_removes_only_the_figure_its_run_drew(checkpoint, tmp_path, capsys):
    out = tmp_path / "notes"
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    model = ["--model", str(checkpoint)]
    assert main(small_run(out, *model)) == 0
    assert main(small_run(out, *model, "--n", "60", "--overwrite")) == 0
    assert notes.read_text() == "my notes"
    notes.unlink()
    figured = tmp_path / "run.tsv"
    assert main(small_run(figured, *model, "--plot")) == 0
    assert json.loads(settings_path(figured).read_text())["outputs"] == ["run.png"]
    assert main(small_run(figured, *model)) == 0  # the record is no setting: it resumes
    assert (tmp_path / "run.png").is_file()
    assert main(small_run(figured, *model, "--n", "60", "--overwrite")) == 0
    assert not (tmp_path / "run.png").exists()


def test_normalize_needs_one_value_per_channel_of_the_data(factory_model, tmp_path, capsys):
    weights, module = factory_model
    argv = small_run(tmp_path / "run.tsv", "--model", str(weights), "--dataset", "digits",
                     "--model-factory", f"{module}:Net",
                     "--normalize", "0.5,0.5,0.5", "0.2,0.2,0.2")
    assert main(argv) == 2
    assert "normalises 3 channels" in one_line_error(capsys)


def test_the_batch_size_of_a_model_without_metadata_is_measured_on_the_data(
        factory_model, tmp_path, monkeypatch):
    weights, module = factory_model
    measured = []

    def fastest(model, input_shape):
        measured.append(input_shape)
        return 32

    monkeypatch.setattr(runner, "fastest_batch_size", fastest)
    argv = ["--sigma", "0.25", "--n0", "10", "--n", "50", "--max", "2", "--device", "cpu",
            "--quiet", "--out", str(tmp_path / "run.tsv"), "--model", str(weights),
            "--dataset", "digits", "--model-factory", f"{module}:Net"]
    assert main(argv) == 0
    assert measured == [(1, 8, 8)]
    assert json.loads(settings_path(tmp_path / "run.tsv").read_text())["batch"] == 32

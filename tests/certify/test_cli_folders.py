"""``certify`` on image folders (torchvision's ImageFolder layout): resized and centre-cropped
images read lazily, and one-line errors for missing folders and unreadable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from certify.analysis import read_results
from certify.cli.certify import main
from encoders.backbones import build_classifier
from encoders.checkpoint import save_checkpoint, versions


@pytest.fixture
def rgb_checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 3, (3, 8, 8), [0.5] * 3, [0.25] * 3)
    path = tmp_path / "rgb.pt"
    metadata = {"architecture": "small_cnn", "dataset": "folder", "sigma": 0.25,
                "num_classes": 3, "input_shape": [3, 8, 8], "recipe": {"test": True},
                "versions": versions()}
    save_checkpoint(path, "classifier", metadata, model.state_dict())
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three classes of two images each, of different sizes, in root/val/<class>/."""
    rng = np.random.default_rng(0)
    for _label, name in enumerate(("ant", "bee", "cat")):
        for i, size in enumerate(((12, 20), (17, 11))):
            path = tmp_path / "images" / "val" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3)).astype(np.uint8)).save(path)
    return tmp_path / "images"


def _args(checkpoint: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--dataset", "folder", "--data-root", str(root),
            "--sigma", "0.25", "--n0", "10", "--n", "100", "--batch", "100", "--device", "cpu",
            "--quiet", "--out", str(out), *extra]


def test_certify_reads_an_image_folder_resized_and_cropped(rgb_checkpoint, folder, tmp_path):
    out = tmp_path / "run.tsv"
    assert main(_args(rgb_checkpoint, folder, out, "--resize", "10", "--crop", "8")) == 0
    results = read_results(out)
    assert len(results) == 6 and list(results.label) == [0, 0, 1, 1, 2, 2]
    assert '"crop": 8' in out.with_name(out.name + ".run.json").read_text()


@pytest.mark.parametrize("damage", ["missing folder", "unreadable image", "sizes differ"])
def test_folder_problems_exit_2_with_one_line(rgb_checkpoint, folder, tmp_path, capsys, damage):
    extra = ["--resize", "10", "--crop", "8"]
    root, needle = folder, "val"
    if damage == "missing folder":
        root, needle = tmp_path / "nowhere", str(tmp_path / "nowhere")
    elif damage == "unreadable image":
        (folder / "val" / "bee" / "1.png").write_bytes(b"not a png")
        needle = str(folder / "val" / "bee" / "1.png")
    else:
        extra, needle = [], "differ in size"
    assert main(_args(rgb_checkpoint, root, tmp_path / "run.tsv", *extra)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and needle in error[0], error

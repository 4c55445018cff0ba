"""A user's model, data and flags that do not fit: one line naming what is wrong, exit status 2,
never a traceback (unless CERTIFY_DEBUG asks for it) and never a wrong row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from command_output import one_line_error
from PIL import Image

import certify.attacks.smoothed
from certify.attacks import PGD, PGDConfig
from certify.cli.attack import main as attack_main
from certify.cli.audit import main as audit_main
from certify.cli.certify import main
from certify.results import read_rows
from certify.sampling import sample_counts

NETS = '''
import torch


class Linear(torch.nn.Module):
    def __init__(self, output="logits"):
        super().__init__()
        self.output = output
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        if self.output == "tuple":
            return logits, logits
        if self.output == "dict":
            return {"logits": logits}
        if self.output == "bool":
            return logits > 0
        if self.output == "one-hot":
            return torch.nn.functional.one_hot(logits.argmax(1), 10).float()
        if self.output == "raise":
            raise KeyError("the layer the user forgot")
        return logits
'''


@pytest.fixture
def nets(tmp_path) -> tuple[Path, Path]:
    """(state dict file, factory module) of a linear digits network."""
    module = tmp_path / "nets.py"
    module.write_text(NETS)
    torch.manual_seed(0)
    weights = tmp_path / "linear.pt"
    torch.save({"fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)}, weights)
    return weights, module


def run(out: Path, *extra: str) -> list[str]:
    return ["--sigma", "0.25", "--n0", "10", "--n", "50", "--batch", "50", "--max", "2",
            "--dataset", "digits", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def attack_run(out: Path, *extra: str) -> list[str]:
    return ["--sigma", "0.25", "--n", "50", "--batch", "50", "--steps", "1",
            "--eot-samples", "2", "--max", "2", "--dataset", "digits", "--device", "cpu",
            "--quiet", "--out", str(out), *extra]


class RaisesInside(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > -1e9):
            raise RuntimeError("boom inside the scripted model")
        return x.flatten(1)[:, :10]


def test_an_exception_inside_a_torchscript_model_is_one_line_naming_it(tmp_path, capsys,
                                                                       monkeypatch):
    path = tmp_path / "raises.pt"
    torch.jit.save(torch.jit.script(RaisesInside()), str(path))
    assert main(run(tmp_path / "r.tsv", "--model", str(path))) == 2
    error = one_line_error(capsys)
    assert str(path) in error and "boom inside the scripted model" in error
    monkeypatch.setenv("CERTIFY_DEBUG", "1")
    assert main(run(tmp_path / "r.tsv", "--model", str(path))) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("module_text, spec, words", [
    ("raise RuntimeError('no GPU here')\n", "{file}:Net", "RuntimeError: no GPU here"),
    ("import os\nos.environ['NO_SUCH_VARIABLE_HERE']\n", "{file}:Net", "KeyError"),
    ("import sys\nsys.exit(0)\n", "{file}:Net", "SystemExit"),
    ("", ".relative:Net", "relative module name"),
])
def test_a_factory_module_that_fails_as_it_is_imported_is_one_line(nets, tmp_path, capsys,
                                                                   module_text, spec, words):
    weights, _ = nets
    file = tmp_path / "broken.py"
    file.write_text(module_text)
    argv = run(tmp_path / "r.tsv", "--model", str(weights), "--model-factory",
               spec.format(file=file))
    assert main(argv) == 2
    assert words in one_line_error(capsys)
    assert not (tmp_path / "r.tsv").exists()


@pytest.mark.parametrize("output, words", [
    ("tuple", "returns a tuple"), ("dict", "returns a dict"), ("bool", "torch.bool tensor"),
    ("raise", "raised KeyError"),
])
def test_a_model_that_returns_no_logits_is_refused_before_the_first_image(nets, tmp_path, capsys,
                                                                          output, words):
    weights, module = nets
    argv = run(tmp_path / "r.tsv", "--model", str(weights), "--model-factory",
               f"{module}:Linear(output={output!r})")
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert words in error and str(weights) in error
    assert not (tmp_path / "r.tsv").exists()


class Returns(torch.nn.Module):
    """A model whose forward returns ``make(batch)``."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def forward(self, batch: torch.Tensor):
        return self.make(batch)


def test_sample_counts_refuses_an_output_that_is_not_logits() -> None:
    with pytest.raises(ValueError, match="floating-point logits"):
        sample_counts(Returns(lambda batch: (batch.flatten(1), None)), torch.rand(1, 8, 8), 0.25,
                      10, 5)
    with pytest.raises(ValueError, match="floating-point logits"):
        sample_counts(Returns(lambda batch: batch.flatten(1) > 0), torch.rand(1, 8, 8), 0.25, 10,
                      5)


@pytest.mark.parametrize("entry, attacks", [(attack_main, "pgd, naive-pgd and eot-pgd"),
                                            (audit_main, "eot-pgd")])
def test_a_model_without_gradients_is_refused_naming_the_attacks(nets, tmp_path, capsys, entry,
                                                                 attacks):
    weights, module = nets
    argv = attack_run(tmp_path / "a.tsv", "--model", str(weights), "--model-factory",
                      f"{module}:Linear(output='one-hot')")
    if entry is audit_main:
        argv = [*argv[:2], "--n0", "10", "--predict-n", "50", *argv[2:]]
    assert entry(argv) == 2
    error = one_line_error(capsys)
    assert "no gradient" in error and attacks in error
    one_hot = Returns(lambda x: torch.nn.functional.one_hot(x.flatten(1)[:, :4].argmax(1),
                                                            4).float())
    with pytest.raises(ValueError, match="no gradient"):
        PGD(one_hot, PGDConfig(steps=1))(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("flags, words", [
    (("--l2-eps", "1e308", "--linf-eps"), "--l2-eps must be at most 8"),
    (("--linf-eps", "1e39", "--l2-eps"), "--linf-eps must be at most 1"),
    (("--linf-eps", "2", "--l2-eps"), "--linf-eps must be at most 1"),
])
def test_epsilons_beyond_the_image_box_are_refused_with_the_reason(checkpoint, tmp_path, capsys,
                                                                   flags, words):
    assert attack_main(attack_run(tmp_path / "a.tsv", "--model", str(checkpoint), *flags)) == 2
    error = one_line_error(capsys)
    assert words in error and "holds every image" in error
    with pytest.raises(ValueError, match="eps must be at most"):
        PGD(torch.nn.Flatten(), PGDConfig(norm="l2", eps=1e308))(torch.rand(1, 1, 8, 8),
                                                                  torch.tensor([0]))


def test_a_sigma_that_overflows_float32_is_named(nets, tmp_path, capsys):
    weights, module = nets
    assert main(run(tmp_path / "r.tsv", "--model", str(weights), "--model-factory",
                    f"{module}:Linear", "--sigma", "1e308")) == 2
    assert "sigma must be at most" in one_line_error(capsys)
    assert not (tmp_path / "r.tsv").exists()
    with pytest.raises(ValueError, match="sigma must be at most"):
        sample_counts(Returns(lambda batch: batch.flatten(1)), torch.rand(1, 8, 8), 1e308, 10, 5)


def test_running_out_of_memory_is_one_line_naming_the_size_flags(checkpoint, tmp_path, capsys,
                                                                 monkeypatch):
    def cannot_allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 256000000000 bytes.")

    monkeypatch.setattr(certify.attacks.smoothed.EOTPGD, "loss", cannot_allocate)
    argv = attack_run(tmp_path / "a.tsv", "--model", str(checkpoint), "--linf-eps",
                      "--eot-samples", "1000000000", "--attack-batch", "1")
    assert attack_main(argv) == 2
    error = one_line_error(capsys)
    assert "out of memory" in error and "--attack-batch or --eot-samples" in error


def png_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    for i, size in enumerate(sizes):
        path = root / "test" / f"class{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(path)
    return root


def rgb_model(tmp_path: Path) -> Path:
    network = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(3, 2))
    path = tmp_path / "rgb.pt"
    torch.jit.save(torch.jit.script(network), str(path))
    return path


def test_a_decompression_bomb_in_an_image_folder_is_refused(tmp_path, capsys):
    root = png_folder(tmp_path / "data", [(8, 8), (8, 8)])
    bomb = root / "test" / "class1" / "1.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels in a few kilobytes
    argv = run(tmp_path / "r.tsv", "--model", str(rgb_model(tmp_path)), "--dataset", "folder",
               "--data-root", str(root))
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert str(bomb) in error and "decompression bomb" in error


@pytest.mark.parametrize("flags, words", [
    (("--crop", "1000000"), "crop 1000000 is larger than image"),
    (("--resize", "1000000"), "resize 1000000 would make image"),
])
def test_resize_and_crop_beyond_the_images_are_refused(tmp_path, capsys, flags, words):
    root = png_folder(tmp_path / "data", [(12, 10), (10, 12)])
    argv = run(tmp_path / "r.tsv", "--model", str(rgb_model(tmp_path)), "--dataset", "folder",
               "--data-root", str(root), *flags)
    assert main(argv) == 2
    assert words in one_line_error(capsys)


def test_a_folder_whose_later_images_are_larger_stops_decoding_at_the_first(tmp_path, capsys,
                                                                           monkeypatch):
    import encoders.folders

    root = png_folder(tmp_path / "data", [(8, 8)] + [(300, 300)] * 20)
    decoded = []
    decode = encoders.folders.decode

    def counting(path, resize=None, crop=None):
        decoded.append(path)
        return decode(path, resize, crop)

    monkeypatch.setattr(encoders.folders, "decode", counting)
    argv = run(tmp_path / "r.tsv", "--model", str(rgb_model(tmp_path)), "--dataset", "folder",
               "--data-root", str(root))
    assert main(argv) == 2
    assert "differ in size" in one_line_error(capsys)
    assert len(decoded) <= 3  # image 0 for the shape, then image 0 and the first larger one


def test_near_equal_epsilons_keep_their_own_rows(checkpoint, tmp_path, capsys):
    out = tmp_path / "a.tsv"
    argv = attack_run(out, "--model", str(checkpoint), "--linf-eps", "--l2-eps", "0.5",
                      "0.5000001", "--n", "20")
    assert attack_main(argv) == 0
    rows = read_rows(out)
    attacked = [(row["idx"], row["attack"], row["eps"]) for row in rows if row["norm"] == "l2"]
    assert len(attacked) == len(set(attacked)) == 2 * 3 * 2  # 2 images, 3 attacks, 2 epsilons
    assert {eps for _, _, eps in attacked} == {"0.5", "0.5000001"}
    table = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [line[3] for line in table if line[2] == "l2"] == ["0.5"] * 3 + ["0.5000001"] * 3


@pytest.mark.parametrize("entry, flags, words", [
    (main, ("--shard", "-1/2"), "--shard i/K needs 0 <= i < K, got '-1/2'"),
    (main, ("--normalize", "0,0,0", "-1,-1,-1"), "std > 0"),
    (attack_main, ("--linf-eps", "-1/255"), "expected a number > 0"),
])
def test_negative_values_reach_their_flag_check(checkpoint, tmp_path, capsys, entry, flags,
                                                words):
    argv = (run if entry is main else attack_run)(tmp_path / "r.tsv", "--model", str(checkpoint),
                                                  *flags)
    assert entry(argv) == 2
    assert words in one_line_error(capsys)


def test_a_negative_normalisation_mean_is_accepted(nets, tmp_path):
    weights, module = nets
    assert main(run(tmp_path / "r.tsv", "--model", str(weights), "--model-factory",
                    f"{module}:Linear", "--normalize", "-0.5", "2")) == 0

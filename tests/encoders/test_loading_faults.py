"""Third-party files that load with friction or not at all: each one loads, or is refused on one
line that says why and what to do, with no warning lines from torch or PIL."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import encoders
from encoders.data import load_dataset
from encoders.errors import CheckpointError, DatasetError
from encoders.published import cohen_classifier, sigma_from_path


class LeNet(nn.Module):
    """An architecture that encoders.published does not rebuild."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def lenet_state(prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"{prefix}{key}": value for key, value in LeNet().state_dict().items()}


@pytest.fixture
def factory(tmp_path, monkeypatch) -> str:
    (tmp_path / "lenet_factory.py").write_text(
        "import torch\n\n\nclass LeNet(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(64, 10)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    return f"{tmp_path / 'lenet_factory.py'}:LeNet"


@pytest.mark.parametrize("prefix", ["1.", "1.module.", "module."])
def test_a_cohen_format_file_of_another_architecture_loads_with_a_factory(tmp_path, factory,
                                                                          prefix):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "lenet", "state_dict": lenet_state(prefix), "epoch": 90}, path)
    model = encoders.load_model(path, factory=factory).model
    expected = LeNet()
    expected.load_state_dict(lenet_state())
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), expected(x))


def test_an_unknown_arch_names_the_factory_as_the_way_forward(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "small_mnist_net", "state_dict": lenet_state("1.")}, path)
    with pytest.raises(CheckpointError, match="`factory`"):
        encoders.load_model(path)


def test_a_factory_file_imports_its_neighbours(tmp_path):
    (tmp_path / "layers.py").write_text("import torch\n\nWIDTH = 64\n")
    (tmp_path / "net.py").write_text(
        "import torch\nfrom layers import WIDTH\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(WIDTH, 10))\n")
    weights = tmp_path / "w.pt"
    torch.save({"1.weight": torch.zeros(10, 64), "1.bias": torch.arange(10.0)}, weights)
    model = encoders.load_model(weights, factory=f"{tmp_path / 'net.py'}:build").model
    assert model(torch.rand(1, 1, 8, 8)).argmax().item() == 9


def test_a_whole_pickled_model_is_refused_naming_the_way_forward(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(LeNet(), path)
    with pytest.raises(CheckpointError) as raised:
        encoders.load_model(path)
    message = str(raised.value)
    assert "refused" in message and "state_dict()" in message and "`factory`" in message


@pytest.mark.parametrize("name, sigma", [
    ("noise_0.25.pth.tar", 0.25), ("checkpoint_smoothed_noise025.pth.tar", 0.25),
    ("cifar10-noise_0.50-seed1.pt", 0.5), ("noise100.pt", 1.0), ("denoise_model.pt", None),
])
def test_sigma_is_read_from_file_names_too(name, sigma):
    assert sigma_from_path(Path("models") / name) == sigma


def test_a_cohen_state_dict_with_keys_that_are_not_strings_is_refused(tmp_path):
    state = cohen_classifier("cifar_resnet20").state_dict()
    path = tmp_path / "intkeys.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": {0: next(iter(state.values())),
                                                         **state}}, path)
    with pytest.raises(CheckpointError, match="string keys"):
        encoders.load_model(path)


def test_complex_weights_are_refused_rather_than_cast(tmp_path, factory):
    state = cohen_classifier("cifar_resnet20").state_dict()
    state["1.fc.weight"] = state["1.fc.weight"].to(torch.complex64) * (1 + 1j)
    path = tmp_path / "complex.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": state}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match="complex weights"):
            encoders.load_model(path)
        weights = tmp_path / "complex_sd.pt"
        torch.save({key: value.to(torch.complex64) for key, value in lenet_state().items()},
                   weights)
        with pytest.raises(CheckpointError, match="complex weights"):
            encoders.load_model(weights, factory=factory)


def test_a_cifar_batch_of_float_pixels_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": np.full((2, 3072), 0.5), b"labels": [1, 2]}
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DatasetError, match="uint8 pixels"):
        load_dataset("cifar10", "test", tmp_path)


def test_loading_torchscript_prints_no_warning(tmp_path):
    path = tmp_path / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(LeNet(), torch.rand(1, 1, 8, 8)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encoders.load_model(path).metadata["format"] == "torchscript"


class Planted:
    """Not a tensor: a pickle holding it must be refused."""


def test_a_protocol_4_pickle_of_objects_is_refused_not_called_damaged(tmp_path):
    path = tmp_path / "planted.pt"
    path.write_bytes(pickle.dumps({"state_dict": Planted()}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as raised:
            encoders.load_model(path)
    message = str(raised.value)
    assert message.startswith(f"refused {path}") and "Planted" in message
    assert "damaged" not in message


def test_jpeg_files_of_another_size_than_the_first_are_refused_before_decoding(tmp_path,
                                                                            monkeypatch):
    from PIL import Image

    import encoders.folders

    for i, size in enumerate([(8, 8)] + [(900, 700)] * 3):
        path = tmp_path / "test" / "only" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(path)
    decoded = []
    decode_jpeg = encoders.folders.decode_jpeg

    def counting(data, mode):
        decoded.append(len(data))
        return decode_jpeg(data, mode=mode)

    monkeypatch.setattr(encoders.folders, "decode_jpeg", counting)
    with pytest.raises(DatasetError, match="differ in size.*1.jpg 700 x 900"):
        load_dataset("folder", "test", tmp_path)
    assert decoded == [1]  # image 0 alone, for the shape the eager decision needs
    assert encoders.folders.jpeg_size((tmp_path / "test" / "only" / "1.jpg").read_bytes()) == (
        900, 700)

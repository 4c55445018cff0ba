"""load_dataset: the embedded digits split, and tiny files in each real on-disk format."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from data_formats import write_cifar, write_idx, write_mnist_like, write_stl10

from encoders.data import DATASET_NAMES, DatasetError, load_dataset


def test_digits_split_is_fixed_stratified_and_scaled():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    image, label = test[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and isinstance(label, int)
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    # stratified: each class holds 20% +- one image of its examples in the test split
    counts = torch.bincount(test.labels, minlength=10) / (
        torch.bincount(test.labels, minlength=10) + torch.bincount(train.labels, minlength=10)
    )
    assert torch.all((counts - 0.2).abs() < 0.01)
    assert torch.equal(load_dataset("digits", "test").images, test.images)


@pytest.mark.parametrize(
    "name,folder,compress",
    [
        ("mnist", "MNIST/raw", False),
        ("mnist", "mnist", True),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("fashion-mnist", "fashion-mnist", False),
    ],
)
def test_mnist_like_idx_files(tmp_path, name, folder, compress):
    write_mnist_like(tmp_path / folder, {"train": 6, "test": 4}, compress)
    train, test = load_dataset(name, "train", tmp_path), load_dataset(name, "test", tmp_path)
    assert (len(train), len(test)) == (6, 4)
    image, label = train[5]
    assert image.shape == (1, 28, 28) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert 0 <= label < 10


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_python_pickles(tmp_path, name, classes):
    write_cifar(tmp_path, name, per_file=3)
    train, test = load_dataset(name, "train", tmp_path), load_dataset(name, "test", tmp_path)
    assert (len(train), len(test)) == ((15, 3) if name == "cifar10" else (3, 3))
    assert train[0][0].shape == (3, 32, 32) and train.num_classes == classes
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    raw = pickle.loads(
        (folder / ("test_batch" if name == "cifar10" else "test")).read_bytes(), encoding="bytes"
    )
    # first row of the file: channel-major 1024 red, 1024 green, 1024 blue bytes
    assert torch.equal(test.images[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))


def test_stl10_binary(tmp_path):
    write_stl10(tmp_path, {"train": 2, "test": 3})
    train, test = load_dataset("stl10", "train", tmp_path), load_dataset("stl10", "test", tmp_path)
    assert (len(train), len(test)) == (2, 3)
    assert train[0][0].shape == (3, 96, 96) and 0 <= train[1][1] < 10


@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n not in ("digits", "folder")])
def test_missing_data_set_says_what_to_put_where(tmp_path, name):
    with pytest.raises(DatasetError) as error:
        load_dataset(name, "train", tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "empty") in message and "http" in message


def test_damaged_files_are_dataset_errors(tmp_path):
    write_mnist_like(tmp_path / "mnist", {"train": 4, "test": 4})
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])  # truncated body
    with pytest.raises(DatasetError, match="damaged"):
        load_dataset("mnist", "train", tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.full(4, 12))  # label out of range
    with pytest.raises(DatasetError, match="label"):
        load_dataset("mnist", "test", tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_planted_cifar_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path, "cifar10", per_file=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": _Exploit()})
    )
    with pytest.raises(DatasetError, match="refused"):
        load_dataset("cifar10", "test", tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_bad_name_or_split():
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet21k", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")


def test_fashion_mnist_is_found_where_debian_installs_it(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist_like(
        debian, {"train": 3, "test": 2}, compress=True
    )  # the package ships the four .gz files
    monkeypatch.setattr("encoders.data.DEBIAN_FASHION_MNIST", debian)
    assert len(load_dataset("fashion-mnist", "test", tmp_path / "empty-root")) == 2


def test_items_are_copies_that_callers_may_modify():
    test = load_dataset("digits", "test")
    image, _ = test[0]
    before = test.images[0].clone()
    image.add_(1.0)
    test.batch(torch.tensor([0]))[0].zero_()
    assert torch.equal(test.images[0], before)

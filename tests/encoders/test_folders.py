"""Image folders (torchvision's ImageFolder layout): labels, in-memory and lazy reading, the
resize-then-centre-crop transform, and one-line errors for missing or unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoders.data import CIFAR10_CLASSES, DatasetError, ImageDataset, load_dataset
from encoders.folders import ImageFolderDataset, open_image_folder


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _random_images(root: Path, split: str, classes: dict[str, int], size=(6, 5), seed=0):
    """PNG files (lossless) root/split/<class>/<i>.png; returns {path: (H, W, 3) pixels}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in classes.items():
        for i in range(count):
            pixels = rng.integers(0, 256, (*size, 3))
            path = root / split / name / f"{i:04d}.png"
            _write(path, pixels)
            written[path] = pixels
    return written


def test_folder_labels_follow_sorted_class_names_and_pixels_are_exact(tmp_path):
    written = _random_images(tmp_path, "train", {"zebra": 2, "ant": 3, "moth": 1})
    train = load_dataset("folder", "train", tmp_path)
    assert isinstance(train, ImageDataset) and train.images.dtype == torch.uint8
    assert len(train) == 6 and train.num_classes == 3 and train.input_shape == [3, 6, 5]
    assert train.labels.tolist() == [0, 0, 0, 1, 2, 2]  # ant, moth, zebra
    image, label = train[3]  # moth/0000.png
    expected = torch.from_numpy(written[tmp_path / "train" / "moth" / "0000.png"]).permute(2, 0, 1)
    assert label == 1 and torch.equal(image, expected.float() / 255)


def test_a_class_list_sets_the_label_order(tmp_path):
    _random_images(tmp_path, "test", {"ant": 1, "zebra": 2})
    test = load_dataset("folder", "test", tmp_path, classes=["zebra", "ant"])
    assert test.labels.tolist() == [0, 0, 1]
    with pytest.raises(DatasetError, match="no class folder .*bee"):
        load_dataset("folder", "test", tmp_path, classes=["ant", "bee"])


def test_val_serves_as_the_test_split(tmp_path):
    _random_images(tmp_path, "val", {"a": 2, "b": 2})
    assert len(load_dataset("folder", "test", tmp_path)) == 4


def test_resize_then_centre_crop_is_lazy_and_takes_the_centre(tmp_path):
    # 20 x 40 (H x W): black left half, white right half. Shorter side to 10 gives 10 x 20; the
    # centre 10 x 10 crop spans columns 5..14: black columns 0..4, white columns 5..9.
    pixels = np.zeros((20, 40, 3))
    pixels[:, 20:] = 255
    _write(tmp_path / "test" / "a" / "0.png", pixels)
    _write(tmp_path / "test" / "b" / "0.png", np.full((30, 25, 3), 128))
    test = load_dataset("folder", "test", tmp_path, resize=10, crop=10)
    assert isinstance(test, ImageFolderDataset)
    image, label = test[0]
    assert image.shape == (3, 10, 10) and label == 0
    assert float(image[:, :, :4].max()) < 0.05 and float(image[:, :, 6:].min()) > 0.95
    pixels, labels = test.batch(torch.tensor([1, 0]))
    assert pixels.shape == (2, 3, 10, 10) and labels.tolist() == [1, 0]
    assert torch.allclose(pixels[0], torch.full((3, 10, 10), 128 / 255), atol=1 / 255)


def test_imagenet_uses_resize_256_and_centre_crop_224(tmp_path):
    _random_images(tmp_path, "val", {"n01440764": 1, "n01443537": 1}, size=(300, 260))
    test = load_dataset("imagenet", "test", tmp_path)
    assert isinstance(test, ImageFolderDataset) and test.input_shape == [3, 224, 224]
    assert test.batch(torch.tensor([0, 1]))[0].shape == (2, 3, 224, 224)


def test_cifar10_jpeg_reads_the_ten_classes_in_label_order(tmp_path):
    for label, name in enumerate(CIFAR10_CLASSES):
        _write(tmp_path / "train" / name / "0000.jpg", np.full((32, 32, 3), 20 * label))
    train = load_dataset("cifar10-jpeg", "train", tmp_path)
    assert train.labels.tolist() == list(range(10)) and train.input_shape == [3, 32, 32]
    means = train.images.float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, 20 * torch.arange(10.0), atol=2)  # JPEG: a few levels off


def test_cifar10_jpeg_refuses_other_sizes_and_missing_classes(tmp_path):
    for name in CIFAR10_CLASSES:
        _write(tmp_path / "train" / name / "0.jpg", np.zeros((16, 16, 3)))
    with pytest.raises(DatasetError, match=r"not \(3, 32, 32\)"):
        load_dataset("cifar10-jpeg", "train", tmp_path)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10-jpeg", "test", tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path / "test") in str(error.value)


def test_missing_and_empty_folders_are_one_line_errors_naming_the_path(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_dataset("folder", "train", tmp_path / "nowhere")
    assert "\n" not in str(error.value) and str(tmp_path / "nowhere" / "train") in str(error.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset("folder", "train", tmp_path)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"no images in .*cat"):
        load_dataset("folder", "train", tmp_path)


def test_an_unreadable_image_is_named(tmp_path):
    _random_images(tmp_path, "train", {"a": 2})
    broken = tmp_path / "train" / "a" / "0001.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError) as error:
        load_dataset("folder", "train", tmp_path)  # in memory: decoded at load
    assert "\n" not in str(error.value) and str(broken) in str(error.value)
    lazy = load_dataset("folder", "train", tmp_path, crop=4)
    lazy[0]
    with pytest.raises(DatasetError, match="0001.png"):
        lazy[1]  # lazy: decoded when read


def test_images_of_different_sizes_need_a_crop(tmp_path):
    _write(tmp_path / "train" / "a" / "0.png", np.zeros((6, 6, 3)))
    _write(tmp_path / "train" / "a" / "1.png", np.zeros((7, 6, 3)))
    with pytest.raises(DatasetError, match="differ in size"):
        load_dataset("folder", "train", tmp_path)
    assert load_dataset("folder", "train", tmp_path, crop=5).batch(torch.arange(2))[0].shape == (
        2, 3, 5, 5)


def test_folder_options_are_refused_for_other_data_sets_and_checked(tmp_path):
    with pytest.raises(ValueError, match="image folders only"):
        load_dataset("digits", "train", resize=10)
    with pytest.raises(ValueError, match="crop"):
        load_dataset("folder", "train", tmp_path, crop=0)


def test_to_device_keeps_items():
    test = load_dataset("digits", "test")
    moved = test.to("cpu")
    assert torch.equal(moved.batch(torch.tensor([3, 1]))[0], test.batch(torch.tensor([3, 1]))[0])


def test_jpeg_files_decode_alike_in_memory_and_lazily_and_a_broken_one_is_named(tmp_path):
    rng = np.random.default_rng(1)
    for _label, name in enumerate(CIFAR10_CLASSES):
        _write(tmp_path / "test" / name / "0.jpg", rng.integers(0, 256, (32, 32, 3)))
    in_memory = load_dataset("cifar10-jpeg", "test", tmp_path)
    lazy = open_image_folder(tmp_path, "test", CIFAR10_CLASSES)
    for index in range(10):
        assert torch.equal(lazy[index][0], in_memory[index][0])
    broken = tmp_path / "test" / "dog" / "0.jpg"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated JPEG
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10-jpeg", "test", tmp_path)
    assert "\n" not in str(error.value) and str(broken) in str(error.value)

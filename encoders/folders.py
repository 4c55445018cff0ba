"""Image folders in torchvision's ImageFolder layout: ``root/<split>/<class>/<image>``.

Labels follow the sorted class-folder names (torchvision's rule), or a class list given by the
caller. :class:`ImageFolderDataset` reads lazily: an item is decoded when it is read, with the
usual evaluation transform of Cohen et al. (2019) for large images (resize the shorter side,
then crop the centre), so ImageNet's validation split (50,000 images of many sizes) never has to
fit in memory; :meth:`ImageFolderDataset.decode_all` decodes a whole split of small images at
once, in parallel (:func:`encoders.data.load_dataset` does so for CIFAR-sized images).

Example:
    >>> test = open_image_folder("data/imagenet", "test", resize=256, crop=224)
    >>> image, label = test[0]; image.shape
    torch.Size([3, 224, 224])
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from encoders.errors import DatasetError, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The file endings read as images (torchvision's ImageFolder list), in any letter case."""
JPEG_EXTENSIONS = (".jpg", ".jpeg")

def split_folder(root: Path, split: str) -> Path:
    """``root/<split>``; for ``"test"``, ``root/val`` when ``root/test`` does not exist
    (ImageNet's layout).

    Raises:
        DatasetError: if neither folder exists.
    """
    folder = root / split
    if not folder.is_dir() and split == "test" and (root / "val").is_dir():
        folder = root / "val"
    if not folder.is_dir():
        raise DatasetError(
            f"no image folder {folder}: put the {split} images in {root}/{split}/<class>/<image> "
            f"(torchvision's ImageFolder layout)"
        )
    return folder


def list_images(
    folder: Path, classes: Sequence[str] | None = None
) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files under ``folder/<class>/``, their labels and the class names.

    Args:
        folder: a split folder holding one sub-folder per class.
        classes: class folder names in label order; default: every sub-folder, sorted.

    Returns:
        (paths, labels, classes), paths sorted by class then file name.

    Raises:
        DatasetError: if a named class folder is missing, or a class holds no image.
    """
    if classes is None:
        classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise DatasetError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_folder = folder / name
        if not class_folder.is_dir():
            raise DatasetError(f"no class folder {class_folder}")
        found = sorted(
            entry.name
            for entry in os.scandir(class_folder)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not found:
            raise DatasetError(
                f"no images in {class_folder} (endings read: {', '.join(IMAGE_EXTENSIONS)})"
            )
        paths.extend(class_folder / file for file in found)
        labels.extend([label] * len(found))
    return paths, labels, tuple(classes)


def decode(path: Path, resize: int | None = None, crop: int | None = None) -> torch.Tensor:
    """One image as uint8 RGB (3, H, W): shorter side resized to ``resize`` (PIL's bilinear
    filter, as torchvision's Resize on PIL images), then the centre ``crop`` x ``crop`` square;
    either step skipped when None. An untransformed JPEG file goes through
    :func:`decode_jpegs`, as :meth:`ImageFolderDataset.decode_all` decodes it.

    Raises:
        DatasetError: naming the file, if it cannot be read or decoded.
    """
    if resize is None and crop is None and path.suffix.lower() in JPEG_EXTENSIONS:
        return decode_jpegs([path])[0]
    return _decode_with_pil(path, resize, crop)


def _decode_with_pil(path: Path, resize: int | None, crop: int | None) -> torch.Tensor:
    try:
        with warnings.catch_warnings():  # PIL's decompression-bomb warning: refused below
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                _check_sizes(path, opened.size, resize, crop)
                image = opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DatasetError(
            f"refused image {path}: its header claims more pixels than PIL decodes safely "
            f"(at most {Image.MAX_IMAGE_PIXELS}; a decompression bomb?) ({one_line(error)})"
        ) from error
    except (OSError, ValueError, UnidentifiedImageError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read image {path} ({one_line(error)})") from error
    if resize is not None:
        image = TF.resize(image, [resize])
    if crop is not None:
        image = TF.center_crop(image, [crop, crop])
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _check_sizes(path: Path, size: tuple[int, int], resize: int | None,
                 crop: int | None) -> None:
    """Refuse, before decoding, a resize that would make the image larger than PIL decodes
    safely, or a crop larger than the (resized) image, which would pad it with black.

    Raises:
        DatasetError: naming the image, its size and the option.
    """
    width, height = size
    if resize is not None:
        scale = resize / min(width, height)
        width, height = max(resize, round(width * scale)), max(resize, round(height * scale))
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and width * height > limit:
            raise DatasetError(
                f"resize {resize} would make image {path} {width} x {height} pixels, more than "
                f"the {limit} that PIL decodes safely; give a smaller resize"
            )
    if crop is not None and crop > min(width, height):
        raise DatasetError(
            f"crop {crop} is larger than image {path} ({width} x {height} pixels"
            f"{' after resizing' if resize is not None else ''}); give a crop of at most "
            f"{min(width, height)}"
        )


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG file's bytes, read from its frame header (SOF marker) without
    decoding; None where they hold no well-formed header."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            return (int.from_bytes(data[position + 5 : position + 7], "big"),
                    int.from_bytes(data[position + 7 : position + 9], "big"))
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def _check_one_size(
    paths: Sequence[Path], data: Sequence[bytes], first: tuple[Path, tuple[int, int]] | None
) -> tuple[Path, tuple[int, int]] | None:
    """Refuse JPEG files whose headers give another size than ``first`` (path, (height, width))
    or than each other, before any is decoded; returns the first file of known size.

    Raises:
        DatasetError: naming two files of different sizes.
    """
    for path, content in zip(paths, data):
        size = jpeg_size(content)
        if size is None:
            continue  # decoding names the problem
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise DatasetError(
                f"images of {path.parent.parent} differ in size ({first[0].name} is "
                f"{first[1][1]} x {first[1][0]}, {path.name} {size[1]} x {size[0]}); give "
                "resize and crop sizes"
            )
    return first


def decode_jpegs(
    paths: Sequence[Path], same_size_as: tuple[Path, tuple[int, int]] | None = None
) -> list[torch.Tensor]:
    """JPEG files as uint8 RGB (3, H, W), decoded in one call to torchvision's libjpeg-turbo
    decoder: a third of PIL's processor time on CIFAR's 32x32 images, and equal to PIL in every
    pixel of the 2,000 CIFAR-10 test images compared. Files it cannot decode go to PIL.

    Args:
        paths: the files.
        same_size_as: if given, (a file, its (height, width)): every file whose header gives
            another size is refused before anything is decoded (so that a folder of small images
            with large ones among them is never decoded whole).

    Raises:
        DatasetError: naming the file, if one cannot be read or decoded, or has another size.
    """
    try:
        contents = [path.read_bytes() for path in paths]
    except OSError:
        return [_decode_with_pil(path, None, None) for path in paths]  # names the file
    if same_size_as is not None:
        _check_one_size(paths, contents, same_size_as)
    try:
        data = [torch.frombuffer(bytearray(content), dtype=torch.uint8) for content in contents]
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image decoders
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(decode_jpeg(data, mode=ImageReadMode.RGB))
    except (OSError, RuntimeError, ValueError):  # PIL decodes each, naming one it cannot read
        return [_decode_with_pil(path, None, None) for path in paths]


class ImageFolderDataset(torch.utils.data.Dataset):
    """An image folder read lazily: each item is decoded (and resized, cropped) when read.

    Items are (FloatTensor (3, H, W) in [0, 1], int), as from :class:`ImageDataset`;
    :meth:`batch` gathers several, which needs equal sizes (give ``crop``).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        classes: Sequence[str],
        resize: int | None = None,
        crop: int | None = None,
    ) -> None:
        if len(paths) != len(labels) or not paths:
            raise ValueError("paths and labels must be non-empty and of equal length")
        self.paths = list(paths)
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.classes = tuple(classes)
        self.num_classes = len(self.classes)
        self.resize, self.crop = resize, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._read(index).float().div_(255.0), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B, 3, H, W) float32 in [0, 1] and labels (B,) for the given indices.

        Raises:
            DatasetError: if an image is unreadable or the images differ in size.
        """
        images = [self._read(int(index)) for index in indices]
        if len({image.shape for image in images}) > 1:
            raise DatasetError(
                f"images of {self.paths[0].parent.parent} differ in size; give a crop size"
            )
        return torch.stack(images).float().div_(255.0), self.labels[indices]

    @property
    def input_shape(self) -> list[int]:
        return list(self._read(0).shape)

    def fingerprint(self) -> str:
        """The SHA-256 of the file list (each image's path below the split folder, its size in
        bytes and its label), the class names and the transform: what can be known of the images
        without decoding them all."""
        hasher = hashlib.sha256()
        hasher.update(f"{self.classes} resize={self.resize} crop={self.crop}\n".encode())
        for path, label in zip(self.paths, self.labels.tolist()):
            size = path.stat().st_size
            hasher.update(f"{path.parent.name}/{path.name} {size} {label}\n".encode())
        return hasher.hexdigest()

    def decode_all(self) -> torch.Tensor:
        """Every image decoded now, as uint8 pixels (N, 3, H, W); untransformed JPEG files in
        batches of 4,096 through :func:`decode_jpegs`.

        Raises:
            DatasetError: if an image is unreadable or the images differ in size.
        """
        if self.resize is None and self.crop is None and all(
            path.suffix.lower() in JPEG_EXTENSIONS for path in self.paths
        ):
            # Every header must give image 0's size before its chunk is decoded: the decision to
            # decode eagerly saw image 0 alone.
            with open(self.paths[0], "rb") as file:
                first = _check_one_size(self.paths[:1], [file.read(1 << 16)], None)
            images = [image for start in range(0, len(self), 4096)
                      for image in decode_jpegs(self.paths[start : start + 4096], first)]
        else:
            images = []
            for index in range(len(self)):  # stop at the first of another size: the eager
                images.append(self._read(index))  # decision saw the first image only
                if images[-1].shape != images[0].shape:
                    break
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            raise DatasetError(
                f"images of {self.paths[0].parent.parent} differ in size ({len(sizes)} sizes, "
                f"e.g. {sorted(sizes)[:2]}); give resize and crop sizes"
            )
        return torch.stack(images)

    def _read(self, index: int) -> torch.Tensor:
        return decode(self.paths[index], self.resize, self.crop)


def open_image_folder(
    root: str | os.PathLike,
    split: str,
    classes: Sequence[str] | None = None,
    resize: int | None = None,
    crop: int | None = None,
) -> ImageFolderDataset:
    """One split of an image folder, read lazily.

    Args:
        root: the folder holding ``<split>/<class>/<image>`` (``val`` serves for ``test``).
        split: ``"train"`` or ``"test"``.
        classes: class folder names in label order; default: the sub-folders, sorted.
        resize: shorter side after resizing (None: keep the size).
        crop: side of the centre crop (None: no crop).

    Raises:
        ValueError: if resize or crop is not a positive integer.
        DatasetError: if the folder, a class folder or every image of a class is missing.
    """
    for name, value in (("resize", resize), ("crop", crop)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    paths, labels, names = list_images(split_folder(Path(root), split), classes)
    return ImageFolderDataset(paths, labels, names, resize, crop)

"""Writers of tiny data sets in their real on-disk formats: IDX, CIFAR python pickles, STL-10
binary."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """An unsigned-byte IDX file (magic 0x0000 08 ndim, big-endian sizes, then the bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist_like(
    folder: Path, sizes: dict[str, int], compress: bool = False, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (sizes[split], 28, 28)),
            compress,
        )
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, sizes[split]), compress
        )


def write_cifar(root: Path, name: str, per_file: int, seed: int = 0) -> None:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) python-version pickles."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, key, classes = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            b"labels",
            10,
        )
    else:
        folder, files, key, classes = (
            root / "cifar-100-python",
            ["train", "test"],
            b"fine_labels",
            100,
        )
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        entry = {
            b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            key: [int(v) for v in rng.integers(0, classes, per_file)],
            b"filenames": [b"x.png"] * per_file,
        }
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))


def write_stl10(root: Path, sizes: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        rng.integers(0, 256, count * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        rng.integers(1, 11, count, dtype=np.uint8).tofile(folder / f"{split}_y.bin")

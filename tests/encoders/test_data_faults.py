"""CIFAR batch files that unpickle to something else than a batch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from data_formats import write_cifar

from encoders.data import DatasetError, load_dataset


@pytest.mark.parametrize(
    "entry",
    [
        np.zeros((2, 3072), dtype=np.uint8),
        [1, 2, 3],
        {b"data": np.zeros((2, 3072), dtype=np.uint8)},
        {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": 7},
        {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, "a"]},
        {b"data": [[1, 2]], b"labels": [1]},
        {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1]},
    ],
    ids=["array", "list", "no-labels", "labels-not-a-list", "labels-not-ints", "data-too-small",
         "fewer-labels"],
)
def test_a_cifar_batch_of_another_shape_is_a_dataset_error(tmp_path, entry) -> None:
    write_cifar(tmp_path, "cifar10", per_file=2)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DatasetError, match="test_batch( holds|:)") as raised:  # names the file
        load_dataset("cifar10", "test", tmp_path)
    assert "\n" not in str(raised.value)

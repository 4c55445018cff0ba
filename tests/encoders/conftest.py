"""Fixtures of tests/encoders: tiny data sets in their real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_formats import write_cifar


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10", per_file=8)
    return tmp_path

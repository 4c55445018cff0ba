"""Argument checks of the library: each raises ValueError naming the argument and its range.

Every public function of certify/ validates its arguments through these, so a bad value is
refused in one way everywhere: ``ValueError("<name> must be ..., got <value>")``. A message that
names another argument, as advice, puts it in backquotes (``pass `overwrite` to replace it``): the
commands print the flag that sets it instead (``--overwrite``).
"""

from __future__ import annotations

import math

import torch


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_count(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_whole(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """Raise ValueError unless ``alpha`` is a number in the open interval (0, 1)."""
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")


def check_image(x: torch.Tensor) -> None:
    """Raise ValueError unless x is one finite floating-point image of shape (C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (C, H, W), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must be one image of shape (C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must hold floating-point pixels in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, but it holds NaN or inf")

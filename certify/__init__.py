"""Randomized-smoothing certification of image classifiers (Cohen, Rosenfeld and Kolter 2019).

Public API::

    from certify import ABSTAIN, Smooth, certify, predict

The names load on first use (PEP 562), so importing a command (``certify.cli...``) does not
import torch before the command can report a Ctrl-C on one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from certify.guarantee import ABSTAIN, Certificate
    from certify.sampling import sample_counts
    from certify.smoothing import Smooth, certify, predict

__all__ = ["ABSTAIN", "Certificate", "Smooth", "certify", "predict", "sample_counts"]

_MODULE_OF = {"ABSTAIN": "certify.guarantee", "Certificate": "certify.guarantee",
              "sample_counts": "certify.sampling", "Smooth": "certify.smoothing",
              "certify": "certify.smoothing", "predict": "certify.smoothing"}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'certify' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # found directly from now on
    return value

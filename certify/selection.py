"""Which images of a data set a run takes, and the noise generator each image (or group) gets.

Cohen et al.'s selection takes every ``skip``-th index below ``max``; every image's noise comes
from a generator seeded by (seed, idx) alone, so an interrupted, resumed or sharded run draws the
same noise for every image as one uninterrupted run (:mod:`certify.runner`).

Example:
    >>> selected_indices(360, skip=30, stop=100)
    [0, 30, 60, 90]
    >>> noise = torch.randn(4, generator=image_generator(0, 30, torch.device("cpu")))
"""

from __future__ import annotations

import numpy as np
import torch


def selected_indices(size: int, skip: int, stop: int | None) -> list[int]:
    """Cohen et al.'s selection: every ``skip``-th image index below ``stop`` (or the end)."""
    return list(range(0, size if stop is None else min(size, stop), skip))


def image_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by (seed, idx) alone, so each image's noise is fixed."""
    state = np.random.SeedSequence([seed, idx]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(
        (int(state[0]) << 31) ^ int(state[1]))

"""This process's place in a ``torchrun`` launch, from the environment torchrun sets.

torchrun starts one process per rank and gives each RANK (from 0), WORLD_SIZE (the number of
processes) and LOCAL_RANK (its index on its machine, the CUDA device it takes). Outside torchrun
none is set and a process is rank 0 of 1. Training joins a process group with them; certifying
takes shard RANK of WORLD_SIZE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TorchrunPlace:
    """RANK, WORLD_SIZE and LOCAL_RANK of this process (0, 1, 0 outside torchrun)."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_place() -> TorchrunPlace:
    """This process's place, read from the environment: the one reader of torchrun's variables.

    Raises:
        ValueError: if one of the variables is set but not an integer.
    """
    return TorchrunPlace(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )

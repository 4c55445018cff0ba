"""Data-parallel SimCLR computes the gradient of the single-process whole-batch loss.

Two gloo processes each embed half of a fixed batch with a DistributedDataParallel model and
back-propagate ``global_batch_loss``; their averaged parameter gradient must equal the gradient of
NT-Xent over the whole batch in one process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from encoders.pretrain import global_batch_loss
from encoders.training import Processes

WORLD, BATCH, FEATURES, EMBEDDING, TEMPERATURE = 2, 6, 5, 4, 0.5


def fixed_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, EMBEDDING))
    generator = torch.Generator().manual_seed(1)
    views_a = torch.randn(WORLD * BATCH, FEATURES, generator=generator)
    views_b = torch.randn(WORLD * BATCH, FEATURES, generator=generator)
    return model, views_a, views_b


def gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.grad.clone() for parameter in model.parameters()]


def one_process(rank: int, store: str, result: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    model, views_a, views_b = fixed_problem()
    parallel = torch.nn.parallel.DistributedDataParallel(model)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    z_a, z_b = parallel(torch.cat([views_a[mine], views_b[mine]])).chunk(2)  # two (B, D)
    global_batch_loss(z_a, z_b, TEMPERATURE, Processes(rank, WORLD, torch.device("cpu"))).backward()
    if rank == 0:
        torch.save(gradients(model), result)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_whole_batch_gradient(tmp_path: Path) -> None:
    result = tmp_path / "gradients.pt"
    mp.spawn(one_process, args=(str(tmp_path / "store"), str(result)), nprocs=WORLD, join=True)
    model, views_a, views_b = fixed_problem()
    z_a, z_b = model(torch.cat([views_a, views_b])).chunk(2)  # two (WORLD * B, D)
    global_batch_loss(z_a, z_b, TEMPERATURE, Processes(0, 1, torch.device("cpu"))).backward()
    for parallel, single in zip(torch.load(result), gradients(model), strict=True):
        torch.testing.assert_close(parallel, single, rtol=1e-5, atol=1e-7)

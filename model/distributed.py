"""Distributed training helpers: one process per rank under `torchrun` (gloo on CPU, nccl on
CUDA); everything here is a no-op with one process.

Evaluation is sharded: each rank runs its own slice of the validation set and the confusion
matrices are summed across ranks (an all-reduce of C × C integers), so the metrics are those of
the whole set while each rank computes 1/world of it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from model.metrics import ConfusionMatrix


def init(device: str) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str, world: int) -> str:
    """This rank's device: its own GPU under torchrun on CUDA."""
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return device


def is_main(rank: int) -> bool:
    return rank == 0


def shard(dataset: Dataset, rank: int, world: int) -> Dataset:
    """Every world-th item from `rank` on: disjoint slices that together are the dataset."""
    if world == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world))  # type: ignore[arg-type]


def mean(value: float, world: int, device: str) -> float:
    """The mean of `value` over the ranks."""
    if world == 1:
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor)
    return tensor.item() / world


def reduce_confusion(matrix: ConfusionMatrix, world: int, device: str) -> ConfusionMatrix:
    """The sum of every rank's confusion matrix (in place)."""
    if world > 1:
        total = matrix.matrix.to(device)
        dist.all_reduce(total)
        matrix.reduce_from(total)
    return matrix


def rng_states(world: int) -> list[Any]:
    """Every rank's torch RNG state (rank order), for an exact resume."""
    if world == 1:
        return [torch.get_rng_state()]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, torch.get_rng_state())
    return gathered


def finish(world: int) -> None:
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()

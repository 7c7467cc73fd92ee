"""Data-parallel training under ``torchrun``: the process environment, the sampler, agreeing to stop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch.utils.data import DistributedSampler, Sampler


class SkipSampler(Sampler[int]):
    """This process's indices of an epoch (a ``DistributedSampler`` without shuffling), minus the first ``skip``."""

    def __init__(self, n: int, rank: int, world: int, skip: int) -> None:
        self.inner: DistributedSampler[int] = DistributedSampler(
            cast(Any, range(n)), num_replicas=world, rank=rank, shuffle=False, drop_last=True
        )
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def stop_requested(should_stop: Callable[[], bool] | None, distributed: bool, device: torch.device) -> bool:
    """``should_stop()``, agreed by all processes of a distributed run (any one stops them all)."""
    if should_stop is None:  # the same on every process
        return False
    flag = bool(should_stop())
    if distributed:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        flag = bool(t.item() > 0)
    return flag


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``(0, 1, 0)`` without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))

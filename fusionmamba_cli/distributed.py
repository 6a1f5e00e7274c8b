"""Small, generic helpers for jobs launched by PyTorch's own launcher (`torchrun` /
`python -m torch.distributed.run`): fusion batches today, training too.

Without a launcher (WORLD_SIZE unset or 1) every helper is a no-op for a single process, so code can
call them unconditionally:

    rank, world, local_rank = init_distributed()          # gloo on CPU, nccl on CUDA
    try:
        mine = shard(items, rank, world)                  # items[rank::world]
        results = gather_to_rank0(work(mine))             # list per rank on rank 0, None elsewhere
        if is_main():
            report(results)
    finally:
        cleanup()
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# Collectives wait at most this long (a rank that finishes early waits for the slowest one at the
# final gather); FUSIONMAMBA_DIST_TIMEOUT_MIN overrides.
DEFAULT_TIMEOUT = datetime.timedelta(hours=6)


def _dist():
    import torch.distributed as dist

    return dist


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as the launcher set them in the environment; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def is_initialized() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None, timeout: datetime.timedelta | None = None) -> tuple[int, int, int]:
    """Join the process group when the launcher asked for more than one process.

    Returns (rank, world, local_rank); (0, 1, 0) and no process group for a single process.
    `backend`: None picks nccl when CUDA is available, else gloo; pass "gloo" for CPU work on a GPU
    machine. With nccl the current CUDA device becomes `cuda:LOCAL_RANK`.
    """
    _, world, local_rank = env_ranks()
    if world <= 1:
        return 0, 1, 0
    dist = _dist()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if timeout is None:
        minutes = os.environ.get("FUSIONMAMBA_DIST_TIMEOUT_MIN")
        timeout = datetime.timedelta(minutes=float(minutes)) if minutes else DEFAULT_TIMEOUT
    dist.init_process_group(backend=backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), local_rank


def shard(items: Sequence[T], rank: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share, `items[rank::world]` (round-robin: balanced, deterministic, disjoint)."""
    if rank is None or world is None:
        rank, world = get_rank(), get_world_size()
    return list(items[rank::world])


def get_rank() -> int:
    return _dist().get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return _dist().get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return get_rank() == 0


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Every rank's picklable `obj`, in rank order, on rank 0; None on the other ranks."""
    if not is_initialized():
        return [obj]
    dist = _dist()
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_rank0(obj: Any) -> Any:
    """Rank 0's picklable `obj`, on every rank (the argument is ignored elsewhere)."""
    if not is_initialized():
        return obj
    holder = [obj]
    _dist().broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if is_initialized():
        _dist().barrier()


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if is_initialized():
        _dist().destroy_process_group()


__all__ = [
    "barrier",
    "broadcast_from_rank0",
    "cleanup",
    "env_ranks",
    "gather_to_rank0",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_initialized",
    "is_main",
    "shard",
]

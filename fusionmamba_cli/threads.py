"""How many CPU threads torch uses for one process. Torch's default (one per core) loses badly on a
shared machine: on a 2-core box with another busy process, a 256x256 pair took 1.2 s on 2 threads
against 0.18 s on 1 (BENCHMARKS.md, "CPU threads"). So the default leaves out the cores that the
1-minute load average says others are using."""

from __future__ import annotations

import math
import os

import torch

THREADS_ENV = "OMP_NUM_THREADS"  # an explicit choice (torchrun sets 1) wins over the load rule


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the whole machine where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_thread_count() -> int:
    """$OMP_NUM_THREADS when set, else the usable CPUs minus the load others put on them
    (1-minute load average, rounded), at least 1."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cpus = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(cpus, math.floor(cpus - load + 0.5)))


def set_threads(count: int | None = None) -> int:
    """Use `count` intra-op threads (the default rule for None); returns the number set."""
    chosen = default_thread_count() if count is None else count
    if chosen < 1:
        raise ValueError(f"thread count must be at least 1, got {chosen}")
    torch.set_num_threads(chosen)
    return chosen

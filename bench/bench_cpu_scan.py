"""CPU scan candidates side by side (not a test): the selective-scan calls of one `compact` forward at
256x256 (18 calls, 15.2 M state updates) with the torch and numba backends, median wall and CPU
time; and the numba backend's first call in a fresh process, with a cold and a warm disk cache.

Usage: python bench/bench_cpu_scan.py [--threads 2] [--repeat 9] [--no-first-call]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

# (batch, K*D, L) and how often a compact 256x256 forward calls it (N = 16, K = 4 directions)
COMPACT_256_SCANS = (((1, 128, 1024), 3), ((1, 256, 256), 4), ((1, 512, 64), 7), ((1, 1024, 16), 4))

FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from fusionmamba_cli.ops.scan_numba import selective_scan_numba
t1 = time.perf_counter()
u = torch.randn(1, 128, 1024); B = torch.randn(1, 4, 16, 1024)
selective_scan_numba(u, u, -torch.rand(128, 16), B, B, torch.ones(128), torch.zeros(128), True)
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f}")
"""


def _inputs(batch: int, channels: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) - 2
    A = -torch.exp(torch.randn(channels, 16, generator=g))
    B, C = (torch.randn(batch, 4, 16, length, generator=g) for _ in range(2))
    return u, delta, A, B, C, torch.randn(channels, generator=g), torch.randn(channels, generator=g) * 0.1


def _time_major(u, delta, A, B, C, D, bias) -> tuple:
    """The same scan as the model's CPU path calls it: (batch, K, L, D) u and delta, B and C strided
    (batch, K, L, N) slices of one projection output."""
    batch, channels, length = u.shape

    def tm(x):
        return x.reshape(batch, 4, channels // 4, length).transpose(2, 3).contiguous()

    projections = torch.cat([B.transpose(2, 3), C.transpose(2, 3)], dim=3)
    return tm(u), tm(delta), A, projections[..., :16], projections[..., 16:], D, bias


def time_forward_scans(fn, repeat: int, layout=None) -> tuple[float, float]:
    """Median wall and CPU ms of all the scans of one compact 256x256 forward."""
    calls = [((layout or (lambda *a: a))(*_inputs(*shape)), count) for shape, count in COMPACT_256_SCANS]
    walls, cpus = [], []
    with torch.inference_mode():
        for rep in range(repeat + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            for args, count in calls:
                for _ in range(count):
                    fn(*args)
            if rep:  # the first round warms up (and JIT-compiles)
                walls.append((time.perf_counter() - wall) * 1e3)
                cpus.append((time.process_time() - cpu) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def first_call_seconds(cache_dir: str) -> tuple[float, float]:
    """(import, first call) seconds in a fresh process whose numba cache lives in `cache_dir`."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    imported, first = out.stdout.split()
    return float(imported), float(first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--no-first-call", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fusionmamba_cli.ops.scan_numba import selective_scan_numba, selective_scan_numba_time_major
    from fusionmamba_cli.ops.scan_torch import selective_scan_torch

    print(f"scans of one compact 256x256 forward, {args.threads} threads, median of {args.repeat}:")
    candidates = (("torch", selective_scan_torch, None), ("numba", selective_scan_numba, None),
                  ("numba, time-major (the model's path)", selective_scan_numba_time_major, _time_major))
    for name, fn, layout in candidates:
        wall, cpu = time_forward_scans(fn, args.repeat, layout)
        print(f"  {name:38s} wall {wall:7.1f} ms   cpu {cpu:7.1f} ms")
    if not args.no_first_call:
        with tempfile.TemporaryDirectory() as cache:
            cold = first_call_seconds(cache)
            warm = first_call_seconds(cache)
        print(f"numba first call in a fresh process: import {cold[0]:.2f} s + {cold[1]:.2f} s (empty cache), "
              f"import {warm[0]:.2f} s + {warm[1]:.2f} s (cache on disk)")


if __name__ == "__main__":
    main()

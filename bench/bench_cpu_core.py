"""CPU timings of the model core (not a test): the scan backends at (batch 1, 4x128 channels,
L 4096, N 16) and a full forward of a preset at 256x256.

Usage: python bench/bench_cpu_core.py [--threads 2] [--repeat 5] [--preset compact]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fusionmamba_cli as fm
from fusionmamba_cli.ops.scan_reference import selective_scan_ref
from fusionmamba_cli.ops.scan_torch import selective_scan_torch


def _median_ms(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--preset", default="compact")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batch, groups, per_group, n_state, length = 1, 4, 128, 16, 4096
    u = torch.randn(batch, groups * per_group, length, generator=g)
    delta = torch.randn(batch, groups * per_group, length, generator=g) - 2
    A = -torch.rand(groups * per_group, n_state, generator=g) * 5
    B = torch.randn(batch, groups, n_state, length, generator=g)
    C = torch.randn(batch, groups, n_state, length, generator=g)
    with torch.inference_mode():
        for name, fn in (("torch", selective_scan_torch), ("reference", selective_scan_ref)):
            med, best = _median_ms(lambda f=fn: f(u, delta, A, B, C), max(1, args.repeat if name == "torch" else 2))
            print(f"scan {name:9s} (1, 4x128, L=4096, N=16): median {med:8.1f} ms  min {best:8.1f} ms")
        model = fm.create_model(args.preset).eval()
        x1, x2 = torch.rand(1, 1, 256, 256, generator=g), torch.rand(1, 1, 256, 256, generator=g)
        med, best = _median_ms(lambda: model(x1, x2), args.repeat)
        print(f"{args.preset} forward 256x256, {args.threads} threads: median {med:.1f} ms  min {best:.1f} ms")


if __name__ == "__main__":
    main()

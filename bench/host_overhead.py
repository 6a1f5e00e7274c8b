#!/usr/bin/env python3
"""Host (CPU) time of the pieces of one Triton scan forward+backward on a CUDA GPU.

Wraps the scan's host functions and kernel launches in timers (perf_counter), runs 200 calls of
fwd+bwd at (1, 256, 1024) and (1, 256, 16384), and prints microseconds per call for each piece,
with an empty autograd.Function round trip for scale. The GPU work is not waited for inside the
loop, so this is the host side only: what an eager call costs before its kernels can run.

    python3 bench/host_overhead.py
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scan import call, make_inputs  # noqa: E402

from fusionmamba_cli.ops import scan_triton as st  # noqa: E402
from fusionmamba_cli.ops.scan_triton import backward_statewise, forward, interface  # noqa: E402

TIMES: dict[str, float] = collections.defaultdict(float)


def timed(name, fn):
    """`fn` with its wall time added to TIMES[name]."""
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
    return run


class TimedLaunch:
    """A Triton kernel whose `kernel[grid](...)` launches are timed."""

    def __init__(self, kernel, name):
        self.kernel, self.name = kernel, name

    def __getitem__(self, grid):
        return timed(self.name, self.kernel[grid])


class Nop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        return g


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("host_overhead.py needs a CUDA GPU")
    # each name replaced where it is looked up: the entry module's, and the kernel modules' own
    interface._forward = timed("our forward (launch included)", interface._forward)
    interface.statewise_backward = timed("statewise backward (launch included)", interface.statewise_backward)
    interface._finish_backward = timed("batch reductions", interface._finish_backward)
    forward._scan_fwd_kernel = TimedLaunch(forward._scan_fwd_kernel, "forward Triton launch")
    backward_statewise._scan_bwd_statewise_kernel = TimedLaunch(backward_statewise._scan_bwd_statewise_kernel,
                                                                "backward Triton launch")
    calls = 200
    for shape in [(1, 256, 1024, 16), (1, 256, 16384, 16)]:
        x = make_inputs(*shape)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        dy = torch.randn_like(x["u"])

        def step():
            for v in leaves.values():
                v.grad = None
            y = timed("forward call", call)(st.selective_scan_triton, leaves)
            timed("backward() call", y.backward)(dy)

        for _ in range(10):
            step()
        torch.cuda.synchronize()
        TIMES.clear()
        for _ in range(calls):
            step()
        torch.cuda.synchronize()
        print(shape, {k: round(v / calls * 1e6, 1) for k, v in TIMES.items()}, "us per call")
    a = torch.randn(16, device="cuda", requires_grad=True)
    for _ in range(10):
        Nop.apply(a).sum().backward()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        Nop.apply(a).sum().backward()
    print("empty autograd.Function + clone + sum, fwd+bwd:", round((time.perf_counter() - start) / calls * 1e6, 1), "us")


if __name__ == "__main__":
    main()

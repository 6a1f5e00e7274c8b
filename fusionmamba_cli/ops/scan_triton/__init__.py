"""Selective scan as Triton kernels (forward and backward), no CUDA compilation needed.

Same contract as `scan_reference.selective_scan_ref`:
    u, delta (batch, K*D, L); A (K*D, N); B, C (batch, K, N, L); D, delta_bias (K*D,) or None.

One stage per module, as mamba-ssm lays out its Triton ops:
    forward.py             the forward kernel (tiles of the sequence, the state carried in registers)
    backward_statewise.py  the default backward (one state at a time, 1-D scans; dB/dC by atomics)
    backward_tiled.py      the deterministic backward (reversed (N, CHUNK) tiles, per-block partials)
    launch.py              tiles, warps and channels per program; which backward runs
    interface.py           `selective_scan_triton` and its autograd function
    common.py              Triton helpers the kernels share
All arithmetic is fp32 (fp64 inputs too); y and the gradients come back in their inputs' dtypes; N may
be any size (padded to a power of two with masks). How the kernels came to be, with timings:
BENCHMARKS.md ("Selective scan on the GPU").
"""

from fusionmamba_cli.ops.scan_triton.interface import is_available, selective_scan_triton
from fusionmamba_cli.ops.scan_triton.launch import DEFAULT_CHUNK

__all__ = ["DEFAULT_CHUNK", "is_available", "selective_scan_triton"]

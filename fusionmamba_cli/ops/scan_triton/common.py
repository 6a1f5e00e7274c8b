"""Triton helpers shared by the scan kernels: the affine combine, softplus and the step size."""

from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET set)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ROW_STRIDE_NOTE: the forward and the tiled backward take the sequence length twice, as L and as
# L_row, the stride of B/C rows. One argument for both computes the same, but compiles differently
# (offline sm_90: other register allocation, other spills in the tiled backward); two keep the
# kernels the H100 sweeps measured. (L_row once also served to hide L's divisibility, for
# unvectorised B/C loads: that variant never shipped and is gone.)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1)."""
    return 1 << max(0, (int(x) - 1).bit_length())


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # compose h -> a1 h + b1, then h -> a2 h + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)), with an accurate log1p; x itself above 20 (like torch)
    z = tl.exp(-tl.abs(x))
    w = 1.0 + z
    w_minus_1 = w - 1.0
    log1p_z = tl.where(w_minus_1 == 0.0, z, tl.log(w) * (z / tl.where(w_minus_1 == 0.0, 1.0, w_minus_1)))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + log1p_z)


@triton.jit
def _dsoftplus(x):
    # d softplus / dx = sigmoid(x); exactly 1 above the threshold
    return tl.where(x > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-x)))


@triton.jit
def _channel_constants(bias_ptr, D_ptr, c, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
    """Channel c's delta bias and skip weight D in fp32 (0 when absent)."""
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c).to(tl.float32)
    d_skip = 0.0
    if HAS_D:
        d_skip = tl.load(D_ptr + c).to(tl.float32)
    return bias, d_skip


@triton.jit
def _step_from_raw(raw, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Raw delta (as loaded, `other=0` outside `mask`) plus the bias, and the step size after the
    softplus, zero outside `mask`."""
    raw = raw.to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _step_size(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Load raw delta, add the bias and apply the softplus; zero outside `mask`."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0)
    return _step_from_raw(raw, mask, bias, HAS_BIAS, SOFTPLUS)

"""Vectorisable fp32 math for the numba scan kernel: exp, 2^x and softplus from multiplies, adds,
one division at most and a bit cast, because numba's `np.exp` in a
loop is a scalar libm call (6-7 ns each here) that keeps the loop from vectorising.

Inlined into the calling kernel (`inline="always"`); the kernels compile with
``error_model="numpy"`` (no zero-division check, which would also stop vectorisation).
Note numba's on-disk cache is keyed on the calling kernel's file: after editing this file, clear
the `__pycache__/*.nbi` / `*.nbc` files of the kernels' modules while developing.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# 2^x = 2^k * 2^f, k = round(x), f = x - k in [-1/2, 1/2] exactly; 2^f by a degree-6 polynomial
# (Taylor coefficients of e^(f ln 2), fitted: 1.3 ulp at most on [-1/2, 1/2] in fp32).
_f32 = np.float32
LOG2E = 1.4426950408889634  # log2(e), a Python float (torch multiplies by it)
_LOG2E_F32 = _f32(LOG2E)
_P = tuple(_f32(c) for c in (1.0, 6.9314718246e-01, 2.4022646248e-01, 5.5503286421e-02, 9.6184890717e-03, 1.3399930904e-03, 1.5345810971e-04))
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = _P
# Clamp so 2^k stays a normal float: below -126 the result is 1.2e-38 instead of a subnormal or 0
# (the scan's decays there are zero for every practical purpose); above 127 it saturates at ~3e38.
_X_MIN, _X_MAX = _f32(-126.0), _f32(127.0)
_HALF, _ONE, _TWO, _ZERO = _f32(0.5), _f32(1.0), _f32(2.0), _f32(0.0)

# softplus needs e^x accurate at large |x| too (2^(x log2 e) loses ~1e-6 there to the rounding of
# x log2 e): e^x = 2^k e^r, k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts, so k ln 2 is
# exact), e^r by Cephes' degree-5 minimax polynomial; clamped so that 2^k stays a normal float.
_LN2_HI, _LN2_LO = _f32(0.693359375), _f32(-2.12194440e-4)
_E = tuple(_f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_E0, _E1, _E2, _E3, _E4, _E5 = _E
_EXP_MIN, _EXP_MAX = _f32(-87.33654), _f32(88.0)
# log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172 for m in [1, sqrt 2]: five odd terms (7e-10)
_LN2, _SQRT2 = _f32(0.6931471805599453), _f32(1.4142135623730951)
_L3, _L5, _L7, _L9 = _f32(1 / 3), _f32(1 / 5), _f32(1 / 7), _f32(1 / 9)


def _inline(fn):
    """A numba function inlined at numba level into its callers (so LLVM sees one loop body)."""
    return numba.njit(inline="always", fastmath={"contract"}, error_model="numpy")(fn)


@intrinsic
def bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (numba has no scalar bit cast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@_inline
def exp2_f32(x):
    """2^x in fp32 from multiplies, adds and one bit cast, so that loops over it vectorise."""
    x = min(max(x, _X_MIN), _X_MAX)
    k = np.floor(x + _HALF)
    f = x - k
    poly = (((((_P6 * f + _P5) * f + _P4) * f + _P3) * f + _P2) * f + _P1) * f + _P0
    return poly * bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))  # poly * 2^k


@_inline
def exp_f32(x):
    """e^x in fp32 to ~1 ulp over the whole range (see the constants), vectorisable."""
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    k = np.floor(x * _LOG2E_F32 + _HALF)
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    poly = (((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5) * (r * r) + r + _ONE
    return poly * bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))


@_inline
def softplus_f32(v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|), vectorisable; within 3e-7 of torch's in fp32."""
    z = exp_f32(min(v, -v))  # e^-|v| in (0, 1]
    w = _ONE + z  # in (1, 2], rounded
    upper = w > _SQRT2
    m = w * _HALF if upper else w  # w = m 2^e, m in [1/sqrt 2, sqrt 2]
    s = (m - _ONE) / (m + _ONE)
    s2 = s * s
    log_m = _TWO * s * (_ONE + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9))))
    # log1p(z) = log(w) + (z - (w - 1)) / w: the second term restores what rounding 1 + z lost
    return max(v, _ZERO) + ((_LN2 if upper else _ZERO) + log_m + (z - (w - _ONE)) / w)


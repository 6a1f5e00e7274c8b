"""A fused CPU selective scan, compiled at run time by numba (nothing to compile at install time).

One pass over the sequence per block of W = 16 channels of one direction: the block's N x W states
live in a small scratch vector, exp(delta*A) is computed in the loop, each output is written once.
The W channels of a block share B_t and C_t, so the innermost loop runs over channels: every lane
does the sequential recurrence in the reference's order (no reassociation, `fastmath=False`) and
LLVM still vectorises it. exp is a Cephes-style polynomial (about 1 ulp in fp32) because numba's
`np.exp` in a loop is a scalar libm call: 6-7 ns each here, against 1.5 ns for a whole state
update with the polynomial.

Work is split over (batch, direction, channel block) with `prange`; no two threads write the same
output, so the result does not depend on the thread count. Memory: the output, delta's softplus
(one tensor like `u`) and a few KiB of scratch per block. Compiled code is cached on disk
(`cache=True`: numba's own lookup order, $NUMBA_CACHE_DIR, then next to this file, then the user's
cache directory; where none is writable it compiles once per process).

Only the fp32 forward is here. fp64 inputs (tests, checks) and calls that need gradients go to the
`torch` backend, which gives the same values within rounding and autograd for free.
"""

from __future__ import annotations

import platform

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fusionmamba_cli.ops.scan_reference import step_sizes
from fusionmamba_cli.ops.scan_torch import selective_scan_torch

WIDTH = 16  # channels per block: two AVX2 vectors of fp32
TILE = 16  # time steps staged per block (a (TILE, WIDTH) slab of delta, u, y and TILE x N of B, C)

# exp(x) = 2^k * exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2] (ln 2 split in two
# so that k ln 2 is exact), exp(r) by Cephes' degree-5 minimax polynomial.
_f32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
_P = tuple(_f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_P0, _P1, _P2, _P3, _P4, _P5 = _P
# Clamp so 2^k stays a normal float: below -87.3 the result is 1.2e-38 instead of a subnormal or 0
# (the scan's decays there are zero for every practical purpose); above 88 it saturates at ~2e38.
_X_MIN, _X_MAX = _f32(-87.33654), _f32(88.0)
_HALF, _ONE = _f32(0.5), _f32(1.0)

_JIT_OPTIONS = dict(fastmath=False, boundscheck=False, nogil=True)


def _jit(**options):
    """`numba.njit` with the on-disk cache where numba finds a writable place for it, else without."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, **_JIT_OPTIONS, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available": compile per process
            return numba.njit(cache=False, **_JIT_OPTIONS, **options)(fn)

    return wrap


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (numba has no scalar bit cast)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_FLUSH_SUBNORMALS = np.uint32(0x8040)  # MXCSR flush-to-zero | denormals-are-zero


def _x86_mxcsr_access(intrinsic_name: str, reads: bool):
    """Codegen for reading (stmxcsr) or writing (ldmxcsr) this thread's SSE control register."""

    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        if not reads:
            builder.store(args[0], slot)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [slot.type]), intrinsic_name)
        builder.call(fn, [slot])
        return builder.load(slot) if reads else context.get_dummy_value()

    return codegen


if platform.machine().lower() in ("x86_64", "amd64"):

    @intrinsic
    def _fp_mode(typingctx):
        """This thread's MXCSR."""
        return types.uint32(), _x86_mxcsr_access("llvm.x86.sse.stmxcsr", reads=True)

    @intrinsic
    def _set_fp_mode(typingctx, mode):
        """Load this thread's MXCSR."""
        return types.void(types.uint32), _x86_mxcsr_access("llvm.x86.sse.ldmxcsr", reads=False)

else:  # elsewhere subnormals stay (slower on some CPUs, same values to ~1e-38)

    @_jit(inline="always")
    def _fp_mode():
        return np.uint32(0)

    @_jit(inline="always")
    def _set_fp_mode(mode):
        pass


@_jit(inline="always")
def _exp_f32(x):
    """exp(x) in fp32 from multiplies, adds and one bit cast, so that loops over it vectorise."""
    x = min(max(x, _X_MIN), _X_MAX)
    k = np.floor(x * _LOG2E + _HALF)
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    poly = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
    return poly * _bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))  # poly * 2^k


@_jit(parallel=True)
def _scan_blocks(u, dt, A, B, C, D, y, per_group, lanes):  # pragma: no cover - compiled, tested through the wrapper
    """y[b, c, t] for every (batch, direction, block of WIDTH channels); shapes as in `selective_scan_numba`.

    `lanes` is WIDTH, passed at run time on purpose: with a constant trip count of 16 LLVM unrolls
    the lane loops completely and then cannot vectorise them (it cannot prove that the scratch
    arrays do not overlap); a run-time count keeps them loops, vectorised behind run-time overlap
    checks (1.5x faster).

    Lanes past the block's real width keep A = dt = 0: decay 1, drive 0, state 0, never written out.
    Subnormals are flushed to zero while a block runs: states that decay through 1e-38 (long runs
    of zero input) otherwise cost a microcode assist per update (1.35x slower in such a synthetic
    case; the shipped weights on real images never get there). Values change only below 1.2e-38.
    """
    batch, _, length = u.shape
    groups, n_state = B.shape[1], B.shape[2]
    blocks = (per_group + WIDTH - 1) // WIDTH
    for item in prange(batch * groups * blocks):
        caller_mode = _fp_mode()
        _set_fp_mode(caller_mode | _FLUSH_SUBNORMALS)
        b = item // (groups * blocks)
        g = (item // blocks) % groups
        c0 = g * per_group + (item % blocks) * WIDTH
        width = min(WIDTH, (g + 1) * per_group - c0)
        h = np.zeros(n_state * WIDTH, np.float32)  # h[n * WIDTH + j]: state n of channel c0 + j
        a = np.zeros(n_state * WIDTH, np.float32)
        skip = np.zeros(WIDTH, np.float32)
        for j in range(width):
            skip[j] = D[c0 + j]
            for n in range(n_state):
                a[n * WIDTH + j] = A[c0 + j, n]
        step = np.zeros(TILE * WIDTH, np.float32)  # the staged slabs, time-major: [t * WIDTH + j]
        drive = np.zeros(TILE * WIDTH, np.float32)
        inp = np.zeros(TILE * WIDTH, np.float32)
        out = np.zeros(TILE * WIDTH, np.float32)
        b_t = np.empty(TILE * n_state, np.float32)
        c_t = np.empty(TILE * n_state, np.float32)
        decay = np.empty(TILE * n_state * WIDTH, np.float32)
        for t0 in range(0, length, TILE):
            steps = min(TILE, length - t0)
            for j in range(width):
                for t in range(steps):
                    step[t * WIDTH + j] = dt[b, c0 + j, t0 + t]
                    inp[t * WIDTH + j] = u[b, c0 + j, t0 + t]
                    drive[t * WIDTH + j] = dt[b, c0 + j, t0 + t] * u[b, c0 + j, t0 + t]
            for n in range(n_state):
                for t in range(steps):
                    b_t[t * n_state + n] = B[b, g, n, t0 + t]
                    c_t[t * n_state + n] = C[b, g, n, t0 + t]
            for t in range(steps):  # all the tile's decays first: one long vectorised loop
                for n in range(n_state):
                    base = (t * n_state + n) * WIDTH
                    for j in range(lanes):
                        decay[base + j] = _exp_f32(step[t * WIDTH + j] * a[n * WIDTH + j])
            for t in range(steps):
                # h_t = exp(dt A) h_{t-1} + (dt u) B_t;  y_t = <C_t, h_t> + D u_t, lanes = channels
                for j in range(lanes):
                    out[t * WIDTH + j] = 0.0
                for n in range(n_state):
                    b_tn, c_tn = b_t[t * n_state + n], c_t[t * n_state + n]
                    base = (t * n_state + n) * WIDTH
                    for j in range(lanes):
                        state = decay[base + j] * h[n * WIDTH + j] + drive[t * WIDTH + j] * b_tn
                        h[n * WIDTH + j] = state
                        out[t * WIDTH + j] += state * c_tn
                for j in range(lanes):
                    out[t * WIDTH + j] = out[t * WIDTH + j] + skip[j] * inp[t * WIDTH + j]
            for j in range(width):
                for t in range(steps):
                    y[b, c0 + j, t0 + t] = out[t * WIDTH + j]
        _set_fp_mode(caller_mode)


def _needs_torch_backend(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    """fp64 or gradients wanted: the fused kernel is an fp32 forward only."""
    present = [t for t in tensors if t is not None]
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in present)
    return wants_grad or present[0].dtype == torch.float64


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous fp32 numpy view (a copy only when the tensor is not one already)."""
    return x.detach().to(torch.float32).contiguous().numpy()


def _run_on_torch_threads(kernel, *args) -> None:
    """Run `kernel` on as many threads as torch uses (`torch.set_num_threads`), and leave torch's count
    as it was: numba's OpenMP pool shares torch's libgomp, and starting it (first call in a process)
    resets the runtime's thread count to all cores, which made every later torch op use 2 threads
    after `torch.set_num_threads(1)`."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        kernel(*args)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def selective_scan_numba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """Same contract as `scan_reference.selective_scan_ref`; CPU tensors; see the module docstring."""
    if _needs_torch_backend((u, delta, A, B, C, D, delta_bias)):
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    dt = step_sizes(delta.detach(), None if delta_bias is None else delta_bias.detach(), delta_softplus, torch.float32)
    skip = torch.zeros(channels) if D is None else D
    y = torch.empty(batch, channels, length, dtype=torch.float32)
    _run_on_torch_threads(
        _scan_blocks,
        _as_numpy(u), _as_numpy(dt), _as_numpy(A), _as_numpy(B), _as_numpy(C), _as_numpy(skip), y.numpy(),
        channels // B.shape[1], WIDTH,
    )
    return y.to(u.dtype)

"""A fused CPU selective scan, compiled at run time by numba (nothing to compile at install time).

One pass over the sequence per chunk of up to 64 channels of one direction: the chunk's N x 64
states live in a small scratch vector, exp(delta*A) is computed in the loop, each output is
written once. The kernel is time-major, (batch, K, L, D): at each step the chunk's channels are
contiguous and share B_t and C_t, so the innermost loops run over channels, every lane does the
sequential recurrence in the reference's order (nothing reassociated; `contract` lets a*b + c be
one FMA) and LLVM vectorises them. exp is 2^x by a polynomial (about 1 ulp in fp32) because
numba's `np.exp` in a loop is a scalar libm call: 6-7 ns each here, against under 1 ns for a whole
state update with the polynomial.

`selective_scan_numba_time_major` takes that layout as it is (`ScanCore2D` produces it on CPU);
`selective_scan_numba`, the backend's channel-major entry, transposes in and out.

Work is split over (batch, direction, channel chunk) with `prange`; no two threads write the same
output, so the result does not depend on the thread count. Memory: the output and a few KiB of
scratch per chunk (the step sizes are made in the loop; the channel-major entry adds its transposed
copies). Compiled code is cached on disk
(`cache=True`: numba's own lookup order, $NUMBA_CACHE_DIR, then next to this file, then the user's
cache directory; where none is writable it compiles once per process).

Only the fp32 forward is here. fp64 inputs (tests, checks), calls that need gradients and calls
traced by torch.compile go to the `torch` backend, which gives the same values within rounding and
autograd for free. Nothing here imports TorchDynamo (importing it costs ~1.8 s of start-up).
"""

from __future__ import annotations

import platform
import weakref

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from fusionmamba_cli.ops.fused import tensors_identity
from fusionmamba_cli.ops.numba_math import LOG2E, exp2_f32, softplus_f32
from fusionmamba_cli.ops.scan_torch import selective_scan_torch

CHUNK = 64  # channels of one direction per work item: the length of every inner loop

# 'contract' only: a*b + c may become one FMA (one rounding instead of two); nothing is reordered,
# so every lane still runs the reference's sequence of operations.
# error_model "numpy": a float division is not checked for zero (the check, a possible exception,
# kept the softplus loop from vectorising: 11.5 vs 1.6 ns an element).
_JIT_OPTIONS = dict(fastmath={"contract"}, boundscheck=False, nogil=True, error_model="numpy")


def _jit(**options):
    """`numba.njit` with the on-disk cache where numba finds a writable place for it, else without."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, **_JIT_OPTIONS, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available": compile per process
            return numba.njit(cache=False, **_JIT_OPTIONS, **options)(fn)

    return wrap


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


@_jit(parallel=True)
def _scan_time_major(u, delta, proj, bias, softplus, A2, B, C, D, y, chunk):  # pragma: no cover - compiled, tested through the wrappers
    """y[b, k, t, :] for every (batch, direction, chunk of channels); u, y (batch, K, L, D);
    B, C (batch, K, L, N) (any strides); A2 = A * log2(e) (K*D, N); D, bias (K*D,).

    The step is dt = softplus(delta + bias) (softplus if `softplus`), from delta (batch, K, L, D),
    or, when `proj` (R, K*D) has R > 0 rows, from low-rank factors delta (batch, K, L, R) with
    delta_t = proj^T f_t per direction: mamba's dt_proj done here, R FMAs per channel and step,
    instead of three torch ops (a rank-R bmm, the bias add, softplus) over a (B, K, L, D) tensor.

    Time-major so that at each step the chunk's channels are contiguous: the innermost loops run
    over up to `chunk` channels that share B_t and C_t, each lane doing the sequential recurrence
    in the reference's order, and LLVM vectorises them (long loops amortise its run-time overlap
    checks; `chunk` is passed at run time so that they stay loops and are not unrolled).

    Subnormals are flushed to zero while a chunk runs: states that decay through 1e-38 (long runs
    of zero input) otherwise cost a microcode assist per update (1.35x slower in such a synthetic
    case; the shipped weights on real images never get there). Values change only below 1.2e-38.
    """
    batch, groups, length, per_group = u.shape
    n_state = B.shape[3]
    rank = proj.shape[0]
    chunks = (per_group + chunk - 1) // chunk
    for item in prange(batch * groups * chunks):
        caller_mode = _fp_mode()
        _set_fp_mode(caller_mode | _FLUSH_SUBNORMALS)
        b = item // (groups * chunks)
        g = (item // chunks) % groups
        d0 = (item % chunks) * chunk
        width = min(chunk, per_group - d0)
        c0 = g * per_group + d0  # the chunk's first channel in the flat K*D numbering of A, D, proj
        h = np.zeros(n_state * width, np.float32)  # h[n * width + j]: state n of channel d0 + j
        a = np.empty(n_state * width, np.float32)
        for n in range(n_state):
            for j in range(width):
                a[n * width + j] = A2[c0 + j, n]
        skip = np.empty(width, np.float32)
        offset = np.empty(width, np.float32)
        for j in range(width):
            skip[j] = D[c0 + j]
            offset[j] = bias[c0 + j]
        step = np.empty(width, np.float32)
        drive = np.empty(width, np.float32)
        out = np.empty(width, np.float32)
        for t in range(length):
            if rank > 0:
                for j in range(width):
                    step[j] = 0.0
                for r in range(rank):
                    factor = delta[b, g, t, r]
                    for j in range(width):
                        step[j] += factor * proj[r, c0 + j]
                for j in range(width):
                    step[j] += offset[j]
            else:
                for j in range(width):
                    step[j] = delta[b, g, t, d0 + j] + offset[j]
            if softplus:
                for j in range(width):
                    step[j] = softplus_f32(step[j])
            for j in range(width):
                drive[j] = step[j] * u[b, g, t, d0 + j]
                out[j] = 0.0
            # h_t = exp(dt A) h_{t-1} + (dt u) B_t;  y_t = <C_t, h_t> + D u_t, lanes = channels
            for n in range(n_state):
                b_tn, c_tn = B[b, g, t, n], C[b, g, t, n]
                for j in range(width):
                    state = exp2_f32(step[j] * a[n * width + j]) * h[n * width + j] + drive[j] * b_tn
                    h[n * width + j] = state
                    out[j] += state * c_tn
            for j in range(width):
                y[b, g, t, d0 + j] = out[j] + skip[j] * u[b, g, t, d0 + j]
        _set_fp_mode(caller_mode)


def _needs_torch_backend(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    """fp64 or gradients wanted (the fused kernel is an fp32 forward only), or TorchDynamo tracing
    (numpy views and a numba call are nothing it can trace; the torch scan is)."""
    present = [t for t in tensors if t is not None]
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in present)
    return wants_grad or present[0].dtype == torch.float64 or torch.compiler.is_compiling()


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    """A C-contiguous fp32 numpy view (a copy only when the tensor is not one already)."""
    if x.dtype == torch.float32 and not x.requires_grad and x.is_contiguous():
        return x.numpy()  # the common case, without three no-op tensor calls
    return x.detach().to(torch.float32).contiguous().numpy()


def _as_strided_numpy(x: torch.Tensor) -> np.ndarray:
    """An fp32 numpy view with the tensor's strides (a copy only for another dtype)."""
    return x.detach().to(torch.float32).numpy()


def run_on_torch_threads(kernel, *args) -> None:
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
    """Same contract as `scan_reference.selective_scan_ref`; CPU tensors; see the module docstring.

    The kernel is time-major: this channel-major entry transposes in and out (copies of u, delta
    and y; B and C are read through strided views); `selective_scan_numba_time_major` takes the kernel's layout directly.
    """
    if _needs_torch_backend((u, delta, A, B, C, D, delta_bias)):
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    groups = B.shape[1]

    def time_major(x: torch.Tensor) -> torch.Tensor:  # (batch, K*D, L) -> (batch, K, L, D)
        return x.reshape(batch, groups, channels // groups, length).transpose(2, 3)

    # delta made contiguous: the kernel's lanes read it along channels
    y = selective_scan_numba_time_major(
        time_major(u), time_major(delta).contiguous(), A, B.transpose(2, 3), C.transpose(2, 3), D, delta_bias, delta_softplus
    )
    return y.transpose(2, 3).reshape(batch, channels, length).to(u.dtype)


def selective_scan_numba_time_major(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    delta_proj: torch.Tensor | None = None,
) -> torch.Tensor:
    """The scan on time-major layouts: u and the result (batch, K, L, D), B and C (batch, K, L, N)
    (strided views are read in place); A (K*D, N), D and delta_bias (K*D,) as in the reference.

    delta is (batch, K, L, D), or with `delta_proj` (K, D, R) low-rank factors (batch, K, L, R)
    whose step is delta[b, k, t] @ delta_proj[k].T (mamba's dt_proj, done inside the kernel).
    fp32 CPU tensors needing no gradient, outside torch.compile only (the caller, `ScanCore2D`,
    checks); the result is fp32.
    """
    batch, groups, length, per_group = u.shape
    a2, proj, offset, skip = _weight_arrays(A, delta_proj, delta_bias, D, groups * per_group)
    y = torch.empty(batch, groups, length, per_group, dtype=torch.float32)
    run_on_torch_threads(
        _scan_time_major,
        _as_numpy(u), _as_strided_numpy(delta), proj, offset, bool(delta_softplus), a2,
        _as_strided_numpy(B), _as_strided_numpy(C), skip, y.numpy(), CHUNK,
    )
    return y


_NO_PROJECTION = np.zeros((0, 1), np.float32)
# id of A -> (weak references to the four tensors, their identity, the arrays): a few entries a model
_weight_cache: dict[int, tuple[tuple, tuple, tuple[np.ndarray, ...]]] = {}
_WEIGHT_CACHE_SIZE = 256


def _weight_arrays(A, delta_proj, delta_bias, D, channels: int) -> tuple[np.ndarray, ...]:
    """The kernel's per-weight arrays: A log2(e), delta_proj as (R, K*D), the bias and D (zeros when
    absent). Kept while the same tensor objects come back unchanged (a module's cached constants and
    parameters: weak references and version counters tell), since making them was most of a small
    call's time (80 of 95 us at L = 1); tensors without a version counter (inference tensors) or
    new each call are converted afresh."""
    tensors = (A, delta_proj, delta_bias, D)
    identity = tensors_identity(*tensors)
    entry = _weight_cache.get(id(A)) if identity is not None else None
    if entry is not None and entry[1] == identity and all((r is None and t is None) or (r is not None and r() is t) for r, t in zip(entry[0], tensors)):
        return entry[2]
    zeros = np.zeros(channels, np.float32)
    arrays = (
        _as_numpy(A.detach() * LOG2E),
        _NO_PROJECTION if delta_proj is None else _as_numpy(delta_proj.detach().reshape(channels, -1).t()),
        zeros if delta_bias is None else _as_numpy(delta_bias),
        zeros if D is None else _as_numpy(D),
    )
    if identity is not None:
        if len(_weight_cache) >= _WEIGHT_CACHE_SIZE:
            _weight_cache.clear()
        _weight_cache[id(A)] = (tuple(None if t is None else weakref.ref(t) for t in tensors), identity, arrays)
    return arrays

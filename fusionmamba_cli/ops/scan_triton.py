"""Selective scan as Triton kernels (forward and backward), no CUDA compilation needed.

Same contract as `scan_reference.selective_scan_ref`:
    u, delta (batch, K*D, L); A (K*D, N); B, C (batch, K, N, L); D, delta_bias (K*D,) or None.

Forward: one program per (channel, batch). It walks L in tiles of TL steps; inside a tile the
recurrence h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t runs as a parallel `tl.associative_scan` over
the (N, TL) tile, and the state (N,) is carried from tile to tile in registers. The next tile's
inputs are loaded before the current one is computed (register double buffering). TL and the warp
count follow the programs-per-SM rules in `_TUNING` (or TL = `chunk` when one is given). When a
gradient is needed, the state entering every backward tile is saved: for the tiled backward TL =
CHUNK (default 128) and every tile's, (batch, K*D, ceil(L/CHUNK), N) fp32, i.e. N/CHUNK of the size
of u, never the O(N*L) history; for the statewise backward (TL capped at its tile TLS) every
TLS/TL-th, (batch, K*D, ceil(L/TLS), N).

Tiled backward (`_scan_bwd_kernel`, deterministic; used when torch's deterministic algorithms are
on, the statewise one below otherwise): one program per (batch, block of BLOCK_D consecutive
channels of one group). It walks the
tiles in reverse; for each tile and each channel of the block it recomputes the tile's states from
the saved entering state (forward-order scan), writes them to a small per-program scratch buffer
(N x CHUNK fp32) and reads them back in reversed time order, along with h_{t-1} (one step further
back; the saved state at the tile start). The walk is latency-bound, so its global loads are
issued ahead of use (`_TUNING["bwd_prefetch"]`; by default everything one (tile, channel) iteration
ahead, in registers, like the forward; after the block's last channel comes the first channel of
the previous tile). The tile is CHUNK steps (a power of two; bench_scan.py --sweep covers 64-512,
the backward's warps by chunk are `_TUNING["bwd_warps"]`). Every reverse-time quantity is loaded
in reversed order and scanned forwards: deriving them from the forward-order values already in
registers would take a `tl.flip` (measured slow) or, for delta_{t+1}, a shift across threads; the
loads hit L1/L2 and the prefetch hides their latency. (This kernel predates the statewise one,
which uses Triton's `reverse=True` scan: with Triton 3.6 it is right on an H100.) The adjoint
g_t = dL/dh_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1} is that forward scan over reversed time; its
value at the tile start is carried to the previous tile. Gradients:
    du_t      = dt_t sum_n g_t B_t + D dy_t
    ddt_t     = sum_n g_t (u_t B_t + A exp(dt_t A) h_{t-1})      (then through softplus and bias)
    dA_n      = sum_t g_t dt_t exp(dt_t A) h_{t-1}
    dB_t      = sum_{c in group} g_t dt_t u_t,   dC_t = sum_{c in group} dy_t h_t
(`_TUNING["exact_prev"]`, default True: exp(dt A) h_{t-1} is computed directly, not as
h_t - dt u B, which cancels when exp(dt A) << 1.)
dB/dC are summed over the block's channels in registers and written as deterministic per-block
partials (batch, K*D/BLOCK_D, N, L), reduced over the blocks of each group with torch (BLOCK_D
divides D and is picked so that there are enough programs and the partials stay under a memory
budget). dD and ddelta_bias are plain reductions done with torch.

Statewise backward (`_scan_bwd_statewise_kernel`, the default unless deterministic algorithms
are requested: see `_bwd_impl`), structured like mamba-ssm's backward (selective_scan_bwd_kernel.cuh).
One program per (batch, channel) walks tiles of TLS steps (`_TUNING["statewise_tile"]`: 1024 while
all programs fit on the GPU at once, else 512, capped at the next power of two >= L; warps
`_TUNING["statewise_warps"]`) from the last to the first. Per tile it loads u, delta (bias, softplus) and dy once, then loops over the
N states at run time (N is not padded): for state n it loads B[n], C[n] of the tile, recomputes h_n
over the tile with a 1-D scan from the state the forward saved at the tile start, runs the adjoint
as a 1-D `reverse=True` scan, and accumulates du, ddelta (over n, in registers), dA[n] and dB[n],
dC[n] (below). So every scan is 1-D over a long tile (TLS/threads consecutive steps per thread)
instead of (N, 128) tiles, and the per-tile costs are paid L/TLS times instead of L/128. The
forward saves the state only every TLS steps (SAVE_EVERY tiles of its own), so the saved states
stay (batch, K*D, ceil(L/TLS), N), O(B*K*D*N*L/TLS). Everything stays in forward time order (no
scratch buffer, no barrier of ours). The term exp(dt_t A) h_{t-1} is computed exactly, with h_{t-1}
from a 4-tuple scan that also composes all-but-the-last elements (mamba-ssm's h_t - dt_t u_t B_t
saves ~5 % but cancels when exp(dt A) << 1: on an H100 it missed the strong-decay test's
tolerance). Per state, dA_n's tile sum and the adjoint at the tile start come from one two-value
reduction. B[n+1], C[n+1] are loaded while state n is processed (`_TUNING["statewise_prefetch"]`).
(Splitting the states of a channel over 2 or 4 programs, for shapes with few programs, was 15-45 %
slower on an H100 at both swept shapes; removed.)
(A first version reversed time through a scratch buffer instead of the `reverse=True` scan:
1.22 vs 1.05 ms at (1, 256, 16384) and equal at (16, 768, 1024) on an H100; removed.)
dB/dC: the channels of a group share B and C, so every program adds its dB[n], dC[n] into
zero-initialised fp32 (batch, K, N, L) buffers with `tl.atomic_add`: the statewise backward's dB
and dC are NOT bit-deterministic (the order of the additions varies from run to run); du, ddelta,
dA are. dA and the dD and ddelta_bias shares are written per (batch, channel) into one flat buffer
per batch element and summed over the batch with torch (contiguous gradients, no launch at batch 1).

All arithmetic is fp32 (fp64 inputs are computed in fp32 too); y and the gradients are returned in
the dtypes of their inputs. N may be any size (padded to a power of two with masks).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

DEFAULT_CHUNK = 128
# Launch knobs (bench/bench_scan.py --sweep explores them; values from an H100 sweep).
# Forward without gradients (no states saved, so the tile need not equal the chunk): with few
# programs (batch*K*D small against the SM count) each program's sequential walk over L is the
# critical path, and long tiles with more warps win (1 x 256 x 16384: tile 256 / 4 warps 0.25 ms,
# tile 64 / 1 warp 0.43 ms); with many programs the GPU is full and small one-warp programs win
# (16 x 768 x 1024: tile 64 / 1 warp 0.38 ms, tile 256 / 4 warps 0.58 ms).
# `infer_rules`: (max programs per SM, tile, warps), first match; `infer_tile` overrides the rule.
_TUNING = {
    "infer_tile": None,
    "infer_rules": ((4, 256, 4), (16, 128, 2), (float("inf"), 64, 1)),
    "fwd_warps": {16: 1, 32: 1, 64: 2, 128: 2, 256: 4, 512: 8, 1024: 8},  # by tile size
    # backward warps by chunk (an int: the same for every chunk); 256 and up not yet measured: N x
    # chunk fp32 tiles per thread grow with the chunk, so more warps keep the registers per thread
    "bwd_warps": {8: 4, 16: 4, 32: 4, 64: 4, 128: 4, 256: 8, 512: 8, 1024: 16},
    "prefetch": True,
    # backward loads issued ahead of use: True (= "all"), "fwd", "early" or False (= "none", the
    # original kernel); see _BWD_PREFETCH_LEVELS
    "bwd_prefetch": True,
    "deterministic": True,
    "fwd_vec": True,
    "bwd_vec": True,
    "exact_prev": True,
    "programs_per_sm": 8,
    "bwd_maxnreg": None,  # register cap for the backward kernel (None: compiler's choice)
    # which backward kernel: "auto" (statewise, or tiled when torch's deterministic algorithms are
    # on: the statewise dB/dC use atomics), "tiled" (_scan_bwd_kernel, (N, CHUNK) tiles, deterministic)
    # or "statewise" (_scan_bwd_statewise_kernel, mamba-ssm's structure: 1-D scans over long tiles,
    # one state at a time). H100, fwd+bwd kernel time (CUDA-graph replay): 0.76 vs 1.66 ms at
    # (1, 256, 16384), 1.64 vs 4.03 ms at (16, 768, 1024) (BENCHMARKS.md).
    "bwd_impl": "auto",
    # statewise backward: tile length (a power of two, or rules (max programs per SM, tile), first
    # match; capped at max(16, next power of two >= L)), and its warps (an int, or a dict by tile; at
    # most tile/32). 1024 with at most 2 programs per SM, else 512 (more resident programs, fewer
    # waves). The threshold came from an offline sm_90 count of 235 registers at 1024 (2 per SM);
    # the final kernel counts 168 there (Triton 3.9 on the CPU machine; 3 per SM) and 125 at 512,
    # so 3 may be the better threshold: unmeasured. H100, CUDA-graph fwd+bwd: few programs,
    # (1, 256, 16384): 1024 0.755 ms, 2048 0.729 (no prefetch), 512 0.831; a full GPU,
    # (16, 768, 1024): 512 1.645, 1024 1.796; 8 warps slower at both.
    "statewise_tile": ((2, 1024), (float("inf"), 512)),
    "statewise_warps": 4,
    # statewise backward: B[n+1], C[n+1] loaded while state n is processed (H100, CUDA-graph
    # fwd+bwd: 0.722 vs 0.775 ms at (1, 256, 16384), 1.859 vs 2.010 ms at (16, 768, 1024))
    "statewise_prefetch": True,
}
# Upper bound for the fp32 dB/dC partial buffers of the deterministic backward (both together).
_PARTIAL_BUDGET_BYTES = 512 * 1024 * 1024


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_available() -> bool:
    """True when Triton imports (it did, or this module would not) and CUDA or the interpreter is there."""
    return bool(torch.cuda.is_available() or _interpreting())


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


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


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
    L, L_row, channels, per_group, n_groups, N, n_tiles, n_saved,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr,
    N_P2: tl.constexpr, TL: tl.constexpr, PREFETCH: tl.constexpr, ROW_ADJ: tl.constexpr,
    SAVE_EVERY: tl.constexpr = 1,
):
    # SAVE_STATES: the state entering every SAVE_EVERY-th tile is stored, at index i // SAVE_EVERY
    # of the channel's n_saved = ceil(n_tiles / SAVE_EVERY) states (SAVE_EVERY > 1 for the statewise
    # backward, whose tiles are SAVE_EVERY forward tiles long).
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    grp = c // per_group
    n = tl.arange(0, N_P2)
    n_mask = n < N
    k = tl.arange(0, TL)

    A = tl.load(A_ptr + c * N + n, mask=n_mask, other=0.0).to(tl.float32)
    bias, d_skip = _channel_constants(bias_ptr, D_ptr, c, HAS_BIAS, HAS_D)

    row = (b * channels + c) * L
    u_base = u_ptr + row
    delta_base = delta_ptr + row
    y_base = y_ptr + row
    # B/C rows are L apart; L_row + ROW_ADJ == L. Passing L - 1 with ROW_ADJ = 1 hides L's
    # divisibility from the compiler: no vectorised B/C loads, so each thread keeps all N states
    # of a time step (no layout conversions, in-thread sums over N).
    Lr = L_row + ROW_ADJ
    # 64-bit scalar bases, 32-bit offsets inside the (N, L) slab: fewer live 64-bit registers
    bc_row = (b * n_groups + grp) * N * Lr
    B_base = B_ptr + bc_row
    C_base = C_ptr + bc_row
    nL = n[:, None] * Lr
    st_base = states_ptr + (b * channels + c) * n_saved * N

    h = tl.zeros([N_P2], dtype=tl.float32)
    if PREFETCH:  # load tile 0 now; each iteration then loads the next tile before computing
        t_mask = k < L
        nt_mask = n_mask[:, None] & t_mask[None, :]
        u_nx = tl.load(u_base + k, mask=t_mask, other=0.0)
        d_nx = tl.load(delta_base + k, mask=t_mask, other=0.0)
        B_nx = tl.load(B_base + (nL + k[None, :]), mask=nt_mask, other=0.0)
        C_nx = tl.load(C_base + (nL + k[None, :]), mask=nt_mask, other=0.0)

    for i in range(n_tiles):
        offs = i * TL + k
        t_mask = offs < L
        if PREFETCH:
            u_t = u_nx.to(tl.float32)
            raw = d_nx.to(tl.float32)
            B_t = B_nx.to(tl.float32)
            C_t = C_nx.to(tl.float32)
            offs_nx = offs + TL
            m_nx = offs_nx < L
            mm_nx = n_mask[:, None] & m_nx[None, :]
            u_nx = tl.load(u_base + offs_nx, mask=m_nx, other=0.0)
            d_nx = tl.load(delta_base + offs_nx, mask=m_nx, other=0.0)
            B_nx = tl.load(B_base + (nL + offs_nx[None, :]), mask=mm_nx, other=0.0)
            C_nx = tl.load(C_base + (nL + offs_nx[None, :]), mask=mm_nx, other=0.0)
        else:
            mm = n_mask[:, None] & t_mask[None, :]
            u_t = tl.load(u_base + offs, mask=t_mask, other=0.0).to(tl.float32)
            raw = tl.load(delta_base + offs, mask=t_mask, other=0.0).to(tl.float32)
            B_t = tl.load(B_base + (nL + offs[None, :]), mask=mm, other=0.0).to(tl.float32)
            C_t = tl.load(C_base + (nL + offs[None, :]), mask=mm, other=0.0).to(tl.float32)

        if SAVE_STATES:
            if SAVE_EVERY == 1:
                tl.store(st_base + i * N + n, h, mask=n_mask)
            else:
                tl.store(st_base + (i // SAVE_EVERY) * N + n, h, mask=n_mask & (i % SAVE_EVERY == 0))
        if HAS_BIAS:
            raw = raw + bias
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw)
        dt = tl.where(t_mask, dt, 0.0)  # padding: decay 1, drive 0, state unchanged

        decay = tl.exp(dt[None, :] * A[:, None])
        drive = (dt * u_t)[None, :] * B_t
        cum_decay, h_local = tl.associative_scan((decay, drive), 1, _affine_combine)
        hs = h_local + cum_decay * h[:, None]
        y = tl.sum(hs * C_t, axis=0)
        if HAS_D:
            y = y + d_skip * u_t
        tl.store(y_base + offs, y.to(y_ptr.dtype.element_ty), mask=t_mask)
        h = tl.sum(tl.where(k[None, :] == TL - 1, hs, 0.0), axis=1)


@triton.jit
def _bwd_fwd_loads(u_ptr, delta_ptr, states_ptr, b, c, i, L, channels, n_tiles, N, n, n_mask, k, TL: tl.constexpr):
    """Forward-order inputs of backward tile `i` of channel `c`, as loaded (no conversion): u, raw
    delta, and the saved state entering the tile. All masked off when i < 0, so a prefetch may run
    one iteration past the end."""
    row = (b * channels + c) * L
    offs_f = i * TL + k
    m_f = (offs_f >= 0) & (offs_f < L)
    u_f = tl.load(u_ptr + row + offs_f, mask=m_f, other=0.0)
    d_f = tl.load(delta_ptr + row + offs_f, mask=m_f, other=0.0)
    st = i * N + n  # negative for i < 0
    h_in = tl.load(states_ptr + (b * channels + c) * n_tiles * N + st, mask=n_mask & (st >= 0), other=0.0)
    return u_f, d_f, h_in


@triton.jit
def _bwd_rev_loads(u_ptr, delta_ptr, dy_ptr, b, c, i, L, channels, k, TL: tl.constexpr):
    """Reversed-order inputs of backward tile `i` of channel `c`, as loaded: u, raw delta, raw delta
    one step later, dy (all masked off when i < 0)."""
    row = (b * channels + c) * L
    offs_r = i * TL + (TL - 1) - k
    m_r = (offs_r >= 0) & (offs_r < L)
    m_r1 = (offs_r >= 0) & (offs_r + 1 < L)
    u_r = tl.load(u_ptr + row + offs_r, mask=m_r, other=0.0)
    d_r = tl.load(delta_ptr + row + offs_r, mask=m_r, other=0.0)
    d_r1 = tl.load(delta_ptr + row + offs_r + 1, mask=m_r1, other=0.0)
    dy_r = tl.load(dy_ptr + row + offs_r, mask=m_r, other=0.0)
    return u_r, d_r, d_r1, dy_r


@triton.jit
def _bwd_tile_fwd_loads(B_base, nL, n_mask, i, L, k, TL: tl.constexpr):
    """B of tile `i` in forward time order (masked off when i < 0)."""
    offs_f = i * TL + k
    mm_f = n_mask[:, None] & ((offs_f >= 0) & (offs_f < L))[None, :]
    return tl.load(B_base + (nL + offs_f[None, :]), mask=mm_f, other=0.0)


@triton.jit
def _bwd_tile_rev_loads(B_base, C_base, nL, n_mask, i, L, k, TL: tl.constexpr):
    """B and C of tile `i` in reversed time order (masked off when i < 0)."""
    offs_r = i * TL + (TL - 1) - k
    mm_r = n_mask[:, None] & ((offs_r >= 0) & (offs_r < L))[None, :]
    B_r = tl.load(B_base + (nL + offs_r[None, :]), mask=mm_r, other=0.0)
    C_r = tl.load(C_base + (nL + offs_r[None, :]), mask=mm_r, other=0.0)
    return B_r, C_r


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr,
    L, L_row, channels, per_group, n_groups, N, n_tiles, block_d, n_blocks,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    N_P2: tl.constexpr, TL: tl.constexpr, BD_P2: tl.constexpr, ATOMIC: tl.constexpr,
    ROW_ADJ: tl.constexpr, EXACT_PREV: tl.constexpr, PREFETCH: tl.constexpr,
):
    # PREFETCH (what is loaded ahead of its use; see _BWD_PREFETCH_LEVELS):
    #   0 every load where its value is first needed, u/delta/dy in reversed order after the
    #     scratch barriers (the original kernel);
    #   1 A, delta_bias, D of the block's channels once up front, and each (tile, channel)
    #     iteration issues all its loads at its start (the reversed-order ones before the recompute);
    #   2 as 1, and the forward-order inputs the recompute needs first (u, delta, entering state,
    #     the tile's B) are loaded one iteration ahead (register double buffering);
    #   3 everything loaded one iteration ahead (most registers).
    # The next iteration of (tile i, channel j) is (i, j + 1), or (i - 1, 0) after the block's last
    # channel, so the same code serves every block_d.
    blk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c0 = blk * block_d
    grp = c0 // per_group
    n = tl.arange(0, N_P2)
    n_mask = n < N
    k = tl.arange(0, TL)
    rows = tl.arange(0, BD_P2)

    # B/C rows are L apart; L_row + ROW_ADJ == L. Passing L - 1 with ROW_ADJ = 1 hides L's
    # divisibility from the compiler: no vectorised B/C loads, so each thread keeps all N states
    # of a time step (no layout conversions, in-thread sums over N).
    Lr = L_row + ROW_ADJ
    # 64-bit scalar bases, 32-bit offsets inside the (N, L) slabs: fewer live 64-bit registers
    bc_row = (b * n_groups + grp) * N * Lr
    B_base = B_ptr + bc_row
    C_base = C_ptr + bc_row
    part_row = (b * n_blocks + blk) * N * Lr
    nL = n[:, None] * Lr
    scratch = scratch_ptr + (b * n_blocks + blk) * (N_P2 * TL)
    nT = n[:, None] * TL
    last_k = k[None, :] == TL - 1

    g_carry = tl.zeros([BD_P2, N_P2], dtype=tl.float32)  # dL/dh at the start of the later tile
    dA_acc = tl.zeros([BD_P2, N_P2], dtype=tl.float32)

    if PREFETCH >= 1:
        # the block's per-channel parameters, loaded once (a row is picked per channel below)
        ch_blk = c0 + rows
        blk_mask = rows < block_d
        A_blk = tl.load(A_ptr + ch_blk[:, None] * N + n[None, :], mask=blk_mask[:, None] & n_mask[None, :],
                        other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias_blk = tl.load(bias_ptr + ch_blk, mask=blk_mask, other=0.0).to(tl.float32)
        if HAS_D:
            D_blk = tl.load(D_ptr + ch_blk, mask=blk_mask, other=0.0).to(tl.float32)
    # the first processed iteration: last tile, first channel of the block
    if PREFETCH >= 2:
        u_f_nx, d_f_nx, h_in_nx = _bwd_fwd_loads(u_ptr, delta_ptr, states_ptr, b, c0, n_tiles - 1, L, channels,
                                                 n_tiles, N, n, n_mask, k, TL)
        B_f_nx = _bwd_tile_fwd_loads(B_base, nL, n_mask, n_tiles - 1, L, k, TL)
    if PREFETCH >= 3:
        u_r_nx, d_r_nx, d_r1_nx, dy_r_nx = _bwd_rev_loads(u_ptr, delta_ptr, dy_ptr, b, c0, n_tiles - 1, L,
                                                          channels, k, TL)
        B_r_nx, C_r_nx = _bwd_tile_rev_loads(B_base, C_base, nL, n_mask, n_tiles - 1, L, k, TL)

    for ii in range(n_tiles):
        i = n_tiles - 1 - ii
        t0 = i * TL
        offs_f = t0 + k  # forward time order
        m_f = offs_f < L
        offs_r = t0 + (TL - 1) - k  # reversed time order
        m_r = offs_r < L
        offs_r1 = offs_r + 1  # the step after, in reversed order
        m_r1 = offs_r1 < L
        mm_f = n_mask[:, None] & m_f[None, :]
        mm_r = n_mask[:, None] & m_r[None, :]
        if PREFETCH >= 2:
            B_f = B_f_nx.to(tl.float32)
            B_f_nx = _bwd_tile_fwd_loads(B_base, nL, n_mask, i - 1, L, k, TL)
        else:
            B_f = tl.load(B_base + (nL + offs_f[None, :]), mask=mm_f, other=0.0).to(tl.float32)
        if PREFETCH >= 3:
            B_r = B_r_nx.to(tl.float32)
            C_r = C_r_nx.to(tl.float32)
            B_r_nx, C_r_nx = _bwd_tile_rev_loads(B_base, C_base, nL, n_mask, i - 1, L, k, TL)
        else:
            B_r = tl.load(B_base + (nL + offs_r[None, :]), mask=mm_r, other=0.0).to(tl.float32)
            C_r = tl.load(C_base + (nL + offs_r[None, :]), mask=mm_r, other=0.0).to(tl.float32)
        dB_acc = tl.zeros([N_P2, TL], dtype=tl.float32)
        dC_acc = tl.zeros([N_P2, TL], dtype=tl.float32)

        for j in range(block_d):
            c = c0 + j
            row = (b * channels + c) * L
            sel = rows[:, None] == j
            if PREFETCH >= 1:
                A = tl.sum(tl.where(sel, A_blk, 0.0), axis=0)
                bias = 0.0
                if HAS_BIAS:
                    bias = tl.sum(tl.where(rows == j, bias_blk, 0.0), axis=0)
            else:
                A = tl.load(A_ptr + c * N + n, mask=n_mask, other=0.0).to(tl.float32)
                bias = 0.0
                if HAS_BIAS:
                    bias = tl.load(bias_ptr + c).to(tl.float32)
            if PREFETCH >= 2:
                # the next iteration: channel j + 1 of this tile, or the first channel of tile i - 1
                wrap = (j + 1) // block_d  # 0 or 1
                c_nx = c0 + (j + 1 - wrap * block_d)
                i_nx = i - wrap
                u_f = u_f_nx.to(tl.float32)
                raw_f = d_f_nx
                h_in = h_in_nx
            else:
                u_f = tl.load(u_ptr + row + offs_f, mask=m_f, other=0.0).to(tl.float32)
                raw_f = tl.load(delta_ptr + row + offs_f, mask=m_f, other=0.0)
                h_in = tl.load(states_ptr + ((b * channels + c) * n_tiles + i) * N + n, mask=n_mask, other=0.0)
            if PREFETCH >= 3:
                u_r, raw_r, raw_r1, dy_r = u_r_nx, d_r_nx, d_r1_nx, dy_r_nx
            elif PREFETCH >= 1:  # this iteration's, issued before the recompute
                u_r, raw_r, raw_r1, dy_r = _bwd_rev_loads(u_ptr, delta_ptr, dy_ptr, b, c, i, L, channels, k, TL)
            if PREFETCH >= 2:  # the next iteration's, in the order they will be needed
                u_f_nx, d_f_nx, h_in_nx = _bwd_fwd_loads(u_ptr, delta_ptr, states_ptr, b, c_nx, i_nx, L, channels,
                                                         n_tiles, N, n, n_mask, k, TL)
            if PREFETCH >= 3:
                u_r_nx, d_r_nx, d_r1_nx, dy_r_nx = _bwd_rev_loads(u_ptr, delta_ptr, dy_ptr, b, c_nx, i_nx, L,
                                                                  channels, k, TL)

            # 1) recompute this tile's states in forward order from the saved entering state
            _, dt_f = _step_from_raw(raw_f, m_f, bias, HAS_BIAS, SOFTPLUS)
            decay_f = tl.exp(dt_f[None, :] * A[:, None])
            drive_f = (dt_f * u_f)[None, :] * B_f
            cum_f, h_loc = tl.associative_scan((decay_f, drive_f), 1, _affine_combine)
            h_f = h_loc + cum_f * h_in[:, None]
            # 2) reverse them in time through the scratch buffer
            tl.store(scratch + (nT + k[None, :]), h_f)
            tl.debug_barrier()
            h_r = tl.load(scratch + (nT + (TL - 1 - k)[None, :]))
            if EXACT_PREV:  # h_{t-1}: one step further back; the saved state at the tile start
                h_prev_r = tl.load(scratch + (nT + (TL - 2 - k)[None, :]), mask=(k < TL - 1)[None, :],
                                   other=0.0)
                h_prev_r = tl.where((k == TL - 1)[None, :], h_in[:, None], h_prev_r)
            tl.debug_barrier()

            # 3) adjoint recurrence, forward scan over reversed time
            if PREFETCH == 0:  # loaded only now, after the barriers (the original order)
                u_r = tl.load(u_ptr + row + offs_r, mask=m_r, other=0.0)
                raw_r = tl.load(delta_ptr + row + offs_r, mask=m_r, other=0.0)
                raw_r1 = tl.load(delta_ptr + row + offs_r1, mask=m_r1, other=0.0)
                dy_r = tl.load(dy_ptr + row + offs_r, mask=m_r, other=0.0)
            u_r = u_r.to(tl.float32)
            dy_r = dy_r.to(tl.float32)
            raw_r, dt_r = _step_from_raw(raw_r, m_r, bias, HAS_BIAS, SOFTPLUS)
            _, dt_r1 = _step_from_raw(raw_r1, m_r1, bias, HAS_BIAS, SOFTPLUS)
            decay_r1 = tl.where(m_r1[None, :], tl.exp(dt_r1[None, :] * A[:, None]), 0.0)
            g_in = tl.sum(tl.where(sel, g_carry, 0.0), axis=0)
            cum_g, g_loc = tl.associative_scan((decay_r1, dy_r[None, :] * C_r), 1, _affine_combine)
            g = g_loc + cum_g * g_in[:, None]
            g_start = tl.sum(tl.where(last_k, g, 0.0), axis=1)
            g_carry = tl.where(sel, g_start[None, :], g_carry)

            # 4) gradients
            dtu = dt_r * u_r
            if EXACT_PREV:  # exp(dt A) h_{t-1}
                h_prev = tl.exp(dt_r[None, :] * A[:, None]) * h_prev_r
            else:  # the same from h_t - dt u B: one exp less, but cancels when exp(dt A) << 1
                h_prev = h_r - dtu[None, :] * B_r
            dB_acc += g * dtu[None, :]
            dC_acc += dy_r[None, :] * h_r
            du = dt_r * tl.sum(g * B_r, axis=0)
            if HAS_D:
                if PREFETCH >= 1:
                    du = du + tl.sum(tl.where(rows == j, D_blk, 0.0), axis=0) * dy_r
                else:
                    du = du + tl.load(D_ptr + c).to(tl.float32) * dy_r
            ddt = tl.sum(g * (u_r[None, :] * B_r + A[:, None] * h_prev), axis=0)
            if SOFTPLUS:
                ddt = ddt * _dsoftplus(raw_r)
            dA_row = tl.sum(g * dt_r[None, :] * h_prev, axis=1)
            dA_acc += tl.where(sel, dA_row[None, :], 0.0)
            tl.store(du_ptr + row + offs_r, du.to(du_ptr.dtype.element_ty), mask=m_r)
            tl.store(ddelta_ptr + row + offs_r, ddt, mask=m_r)

        if ATOMIC:  # dB, dC: (batch, K, N, L), zero-initialised, summed over blocks by atomics
            tl.atomic_add(dB_ptr + bc_row + (nL + offs_r[None, :]), dB_acc, mask=mm_r, sem="relaxed")
            tl.atomic_add(dC_ptr + bc_row + (nL + offs_r[None, :]), dC_acc, mask=mm_r, sem="relaxed")
        else:  # deterministic per-block partials (batch, K*D/BLOCK_D, N, L)
            tl.store(dB_ptr + part_row + (nL + offs_r[None, :]), dB_acc, mask=mm_r)
            tl.store(dC_ptr + part_row + (nL + offs_r[None, :]), dC_acc, mask=mm_r)

    ch = c0 + rows
    dA_ptrs = dA_ptr + (b * channels + ch[:, None]) * N + n[None, :]
    tl.store(dA_ptrs, dA_acc, mask=(rows[:, None] < block_d) & n_mask[None, :])


@triton.jit
def _affine_prev_combine(a1, b1, pa1, pb1, a2, b2, pa2, pb2):
    # (a, b): the composition of all elements of a segment (as `_affine_combine`); (pa, pb): of all
    # but its last element (an element alone: (1, 0)). Scanned, (pa, pb) at t maps the state
    # entering the tile to h_{t-1}, so h_{t-1} comes without a shift across threads.
    return a1 * a2, a2 * b1 + b2, a1 * pa2, pa2 * b1 + pb2


@triton.jit
def _add_pairs(a1, b1, a2, b2):
    return a1 + a2, b1 + b2


@triton.jit
def _scan_bwd_statewise_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr,
    L, channels, per_group, n_groups, N, n_tiles,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    N_P2: tl.constexpr, TL: tl.constexpr, PREFETCH: tl.constexpr,
):
    # One program per (channel, batch), like mamba-ssm's backward: tiles of TL steps from the last
    # to the first, all in forward time order; per tile the per-step inputs (u, delta, dy) are
    # loaded once, then the states are processed one at a time (runtime loop), each with a 1-D
    # forward scan (recompute) and a 1-D reverse scan (adjoint) over the tile. See the module
    # docstring ("statewise backward").
    c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    grp = c // per_group
    k = tl.arange(0, TL)
    idx = tl.arange(0, N_P2)

    row = (b * channels + c) * L
    u_base = u_ptr + row
    delta_base = delta_ptr + row
    dy_base = dy_ptr + row
    # 64-bit scalar bases, 32-bit offsets inside the (N, L) slabs
    bc_row = (b * n_groups + grp) * N * L
    B_base = B_ptr + bc_row
    C_base = C_ptr + bc_row
    dB_base = dB_ptr + bc_row
    dC_base = dC_ptr + bc_row
    st_base = states_ptr + (b * channels + c) * n_tiles * N
    A_row = A_ptr + c * N

    bias, d_skip = _channel_constants(bias_ptr, D_ptr, c, HAS_BIAS, HAS_D)

    g_carry = tl.zeros([N_P2], dtype=tl.float32)  # dL/dh_n at the start of the later tile
    dA_acc = tl.zeros([N_P2], dtype=tl.float32)
    dD_acc = 0.0  # sum_t dy u: this (batch, channel)'s share of dD
    dbias_acc = 0.0  # sum_t ddelta: its share of ddelta_bias

    for ii in range(n_tiles):
        i = n_tiles - 1 - ii
        offs = i * TL + k
        m = offs < L
        m1 = offs + 1 < L
        u = tl.load(u_base + offs, mask=m, other=0.0).to(tl.float32)
        raw, dt = _step_size(delta_base + offs, m, bias, HAS_BIAS, SOFTPLUS)
        _, dt1 = _step_size(delta_base + offs + 1, m1, bias, HAS_BIAS, SOFTPLUS)  # dt_{t+1} (L1 hits)
        dy = tl.load(dy_base + offs, mask=m, other=0.0).to(tl.float32)
        dtu = dt * u
        gB_acc = tl.zeros([TL], dtype=tl.float32)  # sum_n g B
        gAe_acc = tl.zeros([TL], dtype=tl.float32)  # sum_n g A_n exp(dt A_n) h_{t-1}
        if PREFETCH:  # state 0 of this tile; later ones one iteration ahead
            B_nx = tl.load(B_base + offs, mask=m, other=0.0)
            C_nx = tl.load(C_base + offs, mask=m, other=0.0)
        for n in range(N):
            sel = idx == n
            A_n = tl.load(A_row + n).to(tl.float32)
            h0 = tl.load(st_base + i * N + n)
            g_in = tl.sum(tl.where(sel, g_carry, 0.0), axis=0)
            nL = n * L
            if PREFETCH:
                B_n = B_nx.to(tl.float32)
                C_n = C_nx.to(tl.float32)
                n_next = tl.minimum(n + 1, N - 1)  # the last state reloads its own rows
                B_nx = tl.load(B_base + n_next * L + offs, mask=m, other=0.0)
                C_nx = tl.load(C_base + n_next * L + offs, mask=m, other=0.0)
            else:
                B_n = tl.load(B_base + nL + offs, mask=m, other=0.0).to(tl.float32)
                C_n = tl.load(C_base + nL + offs, mask=m, other=0.0).to(tl.float32)
            # 1) forward recompute of state n from the state saved at the tile start, with
            #    h_{t-1} from the same scan (all-but-the-last compositions): e_t = exp(dt_t A) h_{t-1}
            #    exactly (mamba-ssm's h_t - dt u B cancels when exp(dt A) << 1; on an H100 it missed
            #    the strong-decay test's tolerance). exp(x) as exp2(x log2 e), A scaled once.
            A_2 = A_n * 1.4426950408889634
            decay = tl.exp2(dt * A_2)
            cum, h_loc, pcum, p_loc = tl.associative_scan(
                (decay, dtu * B_n, tl.full([TL], 1.0, tl.float32), tl.zeros([TL], dtype=tl.float32)),
                0, _affine_prev_combine)
            h = h_loc + cum * h0
            e = decay * (p_loc + pcum * h0)
            # 2) adjoint g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}, a reverse scan from the tile end
            decay1 = tl.where(m1, tl.exp2(dt1 * A_2), 0.0)
            cg, g_loc = tl.associative_scan((decay1, dy * C_n), 0, _affine_combine, reverse=True)
            g = g_loc + cg * g_in
            # 3) gradients; dA_n's tile sum and the adjoint at the tile start (carried to the
            #    earlier tile) in one reduction (one cross-warp exchange instead of two)
            ge = g * e
            gB_acc += g * B_n
            gAe_acc += A_n * ge
            dA_n, g_first = tl.reduce((dt * ge, tl.where(k == 0, g, 0.0)), 0, _add_pairs)
            dA_acc = tl.where(sel, dA_acc + dA_n, dA_acc)
            g_carry = tl.where(sel, g_first, g_carry)
            tl.atomic_add(dB_base + nL + offs, g * dtu, mask=m, sem="relaxed")
            tl.atomic_add(dC_base + nL + offs, dy * h, mask=m, sem="relaxed")
        # du_t = dt_t sum_n g B + D dy_t; ddelta_t = u_t sum_n g B + sum_n g A_n e, through the softplus
        du = dt * gB_acc
        if HAS_D:
            du = du + d_skip * dy
        ddt = u * gB_acc + gAe_acc
        if SOFTPLUS:
            ddt = ddt * _dsoftplus(raw)
        tl.store(du_ptr + row + offs, du.to(du_ptr.dtype.element_ty), mask=m)
        tl.store(ddelta_ptr + row + offs, ddt, mask=m)
        dD_t, dbias_t = tl.reduce((dy * u, tl.where(m, ddt, 0.0)), 0, _add_pairs)
        dD_acc += dD_t
        dbias_acc += dbias_t

    # per batch element, flat: dA (K*D, N), then the dD shares (K*D,), then the ddelta_bias shares
    # (K*D,), so that each sum over the batch is a contiguous gradient
    sums = dA_ptr + b * channels * (N + 2)
    tl.store(sums + c * N + idx, dA_acc, mask=idx < N)
    tl.store(sums + channels * N + c, dD_acc)
    tl.store(sums + channels * (N + 1) + c, dbias_acc)


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------


def _next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


_SM_COUNTS: dict[int, int] = {}  # by CUDA device index (a plain dict: torch.compile warns on lru_cache)


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


def _infer_config(programs: int, device: torch.device) -> tuple[int, int]:
    """(tile, warps) of the gradient-free forward, from the number of programs per SM."""
    if _TUNING["infer_tile"]:
        tile = _check_chunk(_TUNING["infer_tile"])
        return tile, _TUNING["fwd_warps"].get(tile, 4)
    per_sm = programs / _num_sms(device)
    for limit, tile, warps in _TUNING["infer_rules"]:
        if per_sm <= limit:
            return tile, warps
    return 64, 1


def _choose_block_d(batch: int, channels: int, per_group: int, n_state: int, length: int,
                    device: torch.device) -> int:
    """Channels per backward program: as many as keep >= `programs_per_sm` programs per SM (fewer
    dB/dC partials), more if the partials would exceed the memory budget. Always a divisor of
    `per_group` (one group per program)."""
    divisors = [d for d in range(1, per_group + 1) if per_group % d == 0]
    target = int(_TUNING["programs_per_sm"]) * _num_sms(device)
    fitting = [d for d in divisors if batch * (channels // d) >= target]
    block = fitting[-1] if fitting else 1
    for d in divisors:
        if d < block:
            continue
        block = d
        if 2 * batch * (channels // d) * n_state * length * 4 <= _PARTIAL_BUDGET_BYTES:
            break
    return block


def _bwd_warps(chunk: int) -> int:
    """Warps of the backward kernel at this chunk (`_TUNING["bwd_warps"]`: a dict by chunk or an int)."""
    warps = _TUNING["bwd_warps"]
    if isinstance(warps, dict):
        return int(warps.get(chunk, 4))
    return int(warps)


# backward prefetch levels (the kernel's PREFETCH; see _scan_bwd_kernel): "none" the original
# kernel; "early" all loads of an iteration at its start; "fwd" also the recompute's forward-order
# inputs one iteration ahead; "all" everything one iteration ahead. True means "all".
_BWD_PREFETCH_LEVELS = {"none": 0, "early": 1, "fwd": 2, "all": 3}


def _bwd_prefetch_level() -> int:
    """`_TUNING["bwd_prefetch"]` as the kernel's PREFETCH level (0-3, see _BWD_PREFETCH_LEVELS)."""
    value = _TUNING["bwd_prefetch"]
    if value is None or isinstance(value, bool):
        return 3 if value else 0
    if isinstance(value, int) and value in _BWD_PREFETCH_LEVELS.values():
        return value
    if isinstance(value, str) and value in _BWD_PREFETCH_LEVELS:
        return _BWD_PREFETCH_LEVELS[value]
    raise ValueError(f"_TUNING['bwd_prefetch'] must be a bool, one of {sorted(_BWD_PREFETCH_LEVELS)} or "
                     f"0-3; got {value!r}")


_BWD_IMPLS = ("auto", "tiled", "statewise")


def _bwd_impl() -> str:
    """The backward kernel to use: `_TUNING["bwd_impl"]`, with "auto" resolved to "statewise" (the
    faster) unless torch's deterministic algorithms are on (its dB/dC atomics are not)."""
    impl = _TUNING["bwd_impl"]
    if impl not in _BWD_IMPLS:
        raise ValueError(f"_TUNING['bwd_impl'] must be one of {_BWD_IMPLS}; got {impl!r}")
    if impl == "auto":
        return "tiled" if torch.are_deterministic_algorithms_enabled() else "statewise"
    return impl


def _statewise_tile(length: int, programs_per_sm: float) -> int:
    """Tile of the statewise backward: `_TUNING["statewise_tile"]` (a power of two, or rules
    (max programs per SM, tile) of which the first match counts), capped at max(16, the next power
    of two >= length) so that short sequences scan no padding."""
    tile = _TUNING["statewise_tile"]
    if not isinstance(tile, int):
        tile = next(t for limit, t in tile if programs_per_sm <= limit)
    return min(_check_chunk(tile), max(16, _next_pow2(length)))


def _statewise_warps(tile: int) -> int:
    """Warps of the statewise backward at this tile (`_TUNING["statewise_warps"]`: an int or a dict by
    tile), at most tile/32 (short tiles of short sequences: no warps holding only copies)."""
    warps = _TUNING["statewise_warps"]
    warps = int(warps.get(tile, 4)) if isinstance(warps, dict) else int(warps)
    return max(1, min(warps, tile // 32))


def _row_args(length: int, vectorise: bool) -> tuple[int]:
    return (length,) if vectorise else (length - 1,)


def _check_chunk(chunk: int) -> int:
    chunk = int(chunk)
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two >= 2, got {chunk}")
    return chunk


def _statewise_backward(u, delta, A, B, C, D, delta_bias, dy, states, delta_softplus, tile, warps, prefetch):
    """du, ddelta (fp32), per batch element the flat fp32 sums (dA (K*D, N), the dD shares, the
    ddelta_bias shares), dB, dC from `_scan_bwd_statewise_kernel`; `states` holds the state entering every `tile` steps. dB/dC
    are summed over the channels of a group with fp32 atomics: not bit-deterministic (the order of
    the additions varies)."""
    batch, channels, length = u.shape
    n_groups, n_state = B.shape[1], A.shape[1]
    per_group = channels // n_groups
    dev = u.device
    du = torch.empty_like(u)
    ddelta = torch.empty((batch, channels, length), device=dev, dtype=torch.float32)
    sums = torch.empty((batch, channels * (n_state + 2)), device=dev, dtype=torch.float32)
    # two tensors, not two views of one: under torch.compile (Inductor) a Triton kernel mutating two
    # views of one buffer got wrong gradients (H100, compact model: off by 1.8e8 relative)
    dB_acc = torch.zeros((batch, n_groups, n_state, length), device=dev, dtype=torch.float32)
    dC_acc = torch.zeros_like(dB_acc)
    if length > 0 and batch > 0 and channels > 0:
        _scan_bwd_statewise_kernel[(channels, batch)](
            u, delta, A, B, C,
            u if D is None else D, u if delta_bias is None else delta_bias, dy, states,
            du, ddelta, sums, dB_acc, dC_acc,
            length, channels, per_group, n_groups, n_state, states.shape[2],
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            N_P2=_next_pow2(n_state), TL=tile, PREFETCH=prefetch, num_warps=warps,
        )
    else:
        for t in (du, ddelta, sums):
            t.zero_()
    return du, ddelta, sums, dB_acc.to(B.dtype), dC_acc.to(C.dtype)


def _finish_backward(ctx, u, delta, A, D, delta_bias, dy, du, ddelta, sums, dB, dC):
    """The reductions over the batch shared by both backward kernels. `sums` is dA per batch
    element, (batch, K*D, N) from the tiled kernel, or the statewise kernel's flat
    (batch, K*D*(N + 2)) with the dD and ddelta_bias shares after dA, which the tiled kernel leaves
    to torch here. Every gradient returned is contiguous (no copy when it is accumulated)."""
    channels, n_state = A.shape
    total = sums[0] if sums.shape[0] == 1 else sums.sum(0)  # no launch at batch 1
    has_shares = total.dim() == 1
    dA = (total[:channels * n_state].view(channels, n_state) if has_shares else total).to(A.dtype)
    dD = None
    if D is not None and ctx.needs_input_grad[5]:
        dD = total[channels * n_state:channels * (n_state + 1)] if has_shares else (dy.float() * u.float()).sum((0, 2))
        dD = dD.to(D.dtype)
    dbias = None
    if delta_bias is not None and ctx.needs_input_grad[6]:
        dbias = total[channels * (n_state + 1):] if has_shares else ddelta.sum((0, 2))
        dbias = dbias.to(delta_bias.dtype)
    return (du, ddelta.to(delta.dtype), dA, dB, dC, dD, dbias, None, None, None, None)


def _forward(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit_chunk, save):
    """Launch the forward kernel: y, and when `save` the inputs (contiguous) and the states the
    backward needs, with the backward kernel chosen here (the states are saved at its tile
    boundaries) and its config."""
    batch, channels, length = u.shape
    n_groups, n_state = B.shape[1], A.shape[1]
    if channels % n_groups:
        raise ValueError(f"K*D={channels} is not a multiple of the number of groups K={n_groups}")
    if B.shape != (batch, n_groups, n_state, length) or C.shape != B.shape:
        raise ValueError(f"B, C must be (batch, K, N, L)={(batch, n_groups, n_state, length)}; "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    per_group = channels // n_groups
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D = None if D is None else D.contiguous()
    delta_bias = None if delta_bias is None else delta_bias.contiguous()
    chunk = _check_chunk(chunk)
    impl = _bwd_impl() if save else "tiled"
    bwd_tile = chunk
    if save and impl == "statewise":
        # the forward walks its own tiles (the gradient-free forward's, unless `chunk` is given)
        # and saves the state entering every bwd_tile steps: both are powers of two
        bwd_tile = _statewise_tile(length, batch * channels / _num_sms(u.device))
        tile, warps = (chunk, None) if explicit_chunk else _infer_config(batch * channels, u.device)
        if tile > bwd_tile or warps is None:
            tile = min(tile, bwd_tile)
            warps = _TUNING["fwd_warps"].get(tile, 4)
    elif save or explicit_chunk:
        tile, warps = chunk, _TUNING["fwd_warps"].get(chunk, 4)
    else:
        tile, warps = _infer_config(batch * channels, u.device)
    n_tiles = max(1, -(-length // tile))
    save_every = bwd_tile // tile if save else 1
    n_saved = -(-n_tiles // save_every)  # = max(1, ceil(length / bwd_tile)) when saving

    y = torch.empty_like(u)
    states = torch.empty((batch, channels, n_saved, n_state) if save else (1,),
                         device=u.device, dtype=torch.float32)
    if length > 0 and batch > 0 and channels > 0:
        _scan_fwd_kernel[(channels, batch)](
            u, delta, A, B, C,
            u if D is None else D, u if delta_bias is None else delta_bias, y, states,
            length, *_row_args(length, _TUNING["fwd_vec"]), channels, per_group, n_groups, n_state, n_tiles,
            n_saved,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            SAVE_STATES=save, N_P2=_next_pow2(n_state), TL=tile, PREFETCH=bool(_TUNING["prefetch"]),
            ROW_ADJ=0 if _TUNING["fwd_vec"] else 1, SAVE_EVERY=save_every, num_warps=int(warps),
        )
    if not save:
        return y, None, None
    statewise_opts = (_statewise_warps(bwd_tile), bool(_TUNING["statewise_prefetch"]))
    return y, (u, delta, A, B, C, D, delta_bias, states), (impl, bwd_tile, statewise_opts)


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, block_d, explicit_chunk):
        y, saved, (impl, bwd_tile, statewise_opts) = _forward(
            u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit_chunk, save=True)
        ctx.save_for_backward(*saved)
        # the backward kernel and its launch knobs are fixed by the forward
        ctx.config = (bool(delta_softplus), chunk, block_d, impl, bwd_tile, statewise_opts)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        delta_softplus, chunk, block_d, impl, bwd_tile, statewise_opts = ctx.config
        batch, channels, length = u.shape
        n_groups, n_state = B.shape[1], A.shape[1]
        per_group = channels // n_groups
        n_tiles = states.shape[2]
        dy = dy.contiguous()
        if impl == "statewise":
            du, ddelta, dA_part, dB, dC = _statewise_backward(u, delta, A, B, C, D, delta_bias, dy, states,
                                                              delta_softplus, bwd_tile, *statewise_opts)
            return _finish_backward(ctx, u, delta, A, D, delta_bias, dy, du, ddelta, dA_part, dB, dC)
        if block_d is None:
            block_d = _choose_block_d(batch, channels, per_group, n_state, length, u.device)
        if per_group % block_d:
            raise ValueError(f"block_d={block_d} must divide the channels per group ({per_group})")
        n_blocks = channels // block_d
        n_p2 = _next_pow2(n_state)
        dev = u.device
        atomic = not _TUNING["deterministic"]

        du = torch.empty_like(u)
        ddelta = torch.empty((batch, channels, length), device=dev, dtype=torch.float32)
        dA_part = torch.empty((batch, channels, n_state), device=dev, dtype=torch.float32)
        if atomic:
            dB_part = torch.zeros((batch, n_groups, n_state, length), device=dev, dtype=torch.float32)
        else:
            dB_part = torch.empty((batch, n_blocks, n_state, length), device=dev, dtype=torch.float32)
        dC_part = torch.zeros_like(dB_part) if atomic else torch.empty_like(dB_part)
        scratch = torch.empty((batch * n_blocks * n_p2 * chunk,), device=dev, dtype=torch.float32)
        launch = {}
        if _TUNING["bwd_maxnreg"] and not _interpreting():
            launch["maxnreg"] = int(_TUNING["bwd_maxnreg"])
        if length > 0 and batch > 0 and channels > 0:
            _scan_bwd_kernel[(n_blocks, batch)](
                u, delta, A, B, C,
                u if D is None else D, u if delta_bias is None else delta_bias, dy, states, scratch,
                du, ddelta, dA_part, dB_part, dC_part,
                length, *_row_args(length, _TUNING["bwd_vec"]), channels, per_group, n_groups, n_state, n_tiles,
                block_d, n_blocks,
                HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
                N_P2=n_p2, TL=chunk, BD_P2=_next_pow2(block_d), ATOMIC=atomic,
                ROW_ADJ=0 if _TUNING["bwd_vec"] else 1, EXACT_PREV=bool(_TUNING["exact_prev"]),
                PREFETCH=_bwd_prefetch_level(), num_warps=_bwd_warps(chunk),
                **launch,
            )
        else:
            for t in (du, ddelta, dA_part, dB_part, dC_part):
                t.zero_()

        if atomic:
            dB, dC = dB_part.to(B.dtype), dC_part.to(C.dtype)
        else:
            blocks_per_group = per_group // block_d
            dB = dB_part.view(batch, n_groups, blocks_per_group, n_state, length).sum(2).to(B.dtype)
            dC = dC_part.view(batch, n_groups, blocks_per_group, n_state, length).sum(2).to(C.dtype)
        return _finish_backward(ctx, u, delta, A, D, delta_bias, dy, du, ddelta, dA_part, dB, dC)


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    *,
    chunk: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """Selective scan on the GPU (or the Triton interpreter); shapes as in `scan_reference`.

    `chunk` (power of two): time steps per tile, and the spacing of the states saved for the
    backward of the tiled kernel (default DEFAULT_CHUNK; otherwise the forward tile is tuned
    separately unless `chunk` is given; with the statewise backward, the default, the states are
    saved every `_TUNING["statewise_tile"]` steps). `block_d`: channels per backward program of the
    tiled backward (must divide the channels per group; the statewise backward has
    one channel per program and ignores it); None picks one from the shape and the device.
    """
    explicit = chunk is not None
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    track = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, delta_bias))
    if not track:  # inference: no autograd node, no states saved
        return _forward(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit, save=False)[0]
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, block_d, explicit)


__all__ = ["DEFAULT_CHUNK", "is_available", "selective_scan_triton"]

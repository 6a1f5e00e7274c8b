"""The tiled backward: deterministic, used when torch's deterministic algorithms are on.

One program per (batch, block of BLOCK_D consecutive channels of one group) walks the tiles of
CHUNK steps in reverse. For each tile and channel it recomputes the tile's states from the state the
forward saved at the tile start (a forward-order scan over the (N, CHUNK) tile), writes them to a
per-program scratch buffer and reads them back in reversed time order, with h_{t-1} (one step
further back). Every reverse-time input is loaded in reversed order (a `tl.flip` measured slow),
one (tile, channel) iteration ahead. The adjoint g_t = dL/dh_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}
is a forward scan over reversed time; its value at the tile start is carried to the previous tile.
    du_t  = dt_t sum_n g_t B_t + D dy_t
    ddt_t = sum_n g_t (u_t B_t + A exp(dt_t A) h_{t-1})      (then through softplus and bias)
    dA_n  = sum_t g_t dt_t exp(dt_t A) h_{t-1}
    dB_t  = sum_{c in group} g_t dt_t u_t,   dC_t = sum_{c in group} dy_t h_t
exp(dt A) h_{t-1} is computed directly (h_t - dt u B cancels when exp(dt A) << 1). dB/dC are summed
over the block's channels in registers and written as per-block partials (batch, K*D/BLOCK_D, N, L),
reduced over each group's blocks with torch: no atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusionmamba_cli.ops.scan_triton.common import _affine_combine, _dsoftplus, _step_from_raw, next_pow2
from fusionmamba_cli.ops.scan_triton.launch import choose_block_d, tiled_warps


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
    N_P2: tl.constexpr, TL: tl.constexpr, BD_P2: tl.constexpr,
):
    # A, delta_bias, D of the block's channels are loaded once up front; everything else one
    # (tile, channel) iteration ahead of its use (register double buffering). The next iteration
    # of (tile i, channel j) is (i, j + 1), or (i - 1, 0) after the block's last channel, so the
    # same code serves every block_d.
    blk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c0 = blk * block_d
    grp = c0 // per_group
    n = tl.arange(0, N_P2)
    n_mask = n < N
    k = tl.arange(0, TL)
    rows = tl.arange(0, BD_P2)

    # B/C rows are L_row (== L) apart: see ROW_STRIDE_NOTE in common.py. 64-bit scalar bases,
    # 32-bit offsets inside the (N, L) slabs: fewer live 64-bit registers
    bc_row = (b * n_groups + grp) * N * L_row
    B_base = B_ptr + bc_row
    C_base = C_ptr + bc_row
    part_row = (b * n_blocks + blk) * N * L_row
    nL = n[:, None] * L_row
    scratch = scratch_ptr + (b * n_blocks + blk) * (N_P2 * TL)
    nT = n[:, None] * TL
    last_k = k[None, :] == TL - 1

    g_carry = tl.zeros([BD_P2, N_P2], dtype=tl.float32)  # dL/dh at the start of the later tile
    dA_acc = tl.zeros([BD_P2, N_P2], dtype=tl.float32)

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
    u_f_nx, d_f_nx, h_in_nx = _bwd_fwd_loads(u_ptr, delta_ptr, states_ptr, b, c0, n_tiles - 1, L, channels,
                                             n_tiles, N, n, n_mask, k, TL)
    B_f_nx = _bwd_tile_fwd_loads(B_base, nL, n_mask, n_tiles - 1, L, k, TL)
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
        mm_r = n_mask[:, None] & m_r[None, :]
        B_f = B_f_nx.to(tl.float32)
        B_f_nx = _bwd_tile_fwd_loads(B_base, nL, n_mask, i - 1, L, k, TL)
        B_r = B_r_nx.to(tl.float32)
        C_r = C_r_nx.to(tl.float32)
        B_r_nx, C_r_nx = _bwd_tile_rev_loads(B_base, C_base, nL, n_mask, i - 1, L, k, TL)
        dB_acc = tl.zeros([N_P2, TL], dtype=tl.float32)
        dC_acc = tl.zeros([N_P2, TL], dtype=tl.float32)

        for j in range(block_d):
            c = c0 + j
            row = (b * channels + c) * L
            sel = rows[:, None] == j
            A = tl.sum(tl.where(sel, A_blk, 0.0), axis=0)
            bias = 0.0
            if HAS_BIAS:
                bias = tl.sum(tl.where(rows == j, bias_blk, 0.0), axis=0)
            # the next iteration: channel j + 1 of this tile, or the first channel of tile i - 1
            wrap = (j + 1) // block_d  # 0 or 1
            c_nx = c0 + (j + 1 - wrap * block_d)
            i_nx = i - wrap
            u_f = u_f_nx.to(tl.float32)
            raw_f = d_f_nx
            h_in = h_in_nx
            u_r, raw_r, raw_r1, dy_r = u_r_nx, d_r_nx, d_r1_nx, dy_r_nx
            # the next iteration's loads, in the order they will be needed
            u_f_nx, d_f_nx, h_in_nx = _bwd_fwd_loads(u_ptr, delta_ptr, states_ptr, b, c_nx, i_nx, L, channels,
                                                     n_tiles, N, n, n_mask, k, TL)
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
            # h_{t-1}: one step further back; the saved state at the tile start
            h_prev_r = tl.load(scratch + (nT + (TL - 2 - k)[None, :]), mask=(k < TL - 1)[None, :],
                               other=0.0)
            h_prev_r = tl.where((k == TL - 1)[None, :], h_in[:, None], h_prev_r)
            tl.debug_barrier()

            # 3) adjoint recurrence, forward scan over reversed time
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
            h_prev = tl.exp(dt_r[None, :] * A[:, None]) * h_prev_r  # exp(dt A) h_{t-1}, exactly
            dB_acc += g * dtu[None, :]
            dC_acc += dy_r[None, :] * h_r
            du = dt_r * tl.sum(g * B_r, axis=0)
            if HAS_D:
                du = du + tl.sum(tl.where(rows == j, D_blk, 0.0), axis=0) * dy_r
            ddt = tl.sum(g * (u_r[None, :] * B_r + A[:, None] * h_prev), axis=0)
            if SOFTPLUS:
                ddt = ddt * _dsoftplus(raw_r)
            dA_row = tl.sum(g * dt_r[None, :] * h_prev, axis=1)
            dA_acc += tl.where(sel, dA_row[None, :], 0.0)
            tl.store(du_ptr + row + offs_r, du.to(du_ptr.dtype.element_ty), mask=m_r)
            tl.store(ddelta_ptr + row + offs_r, ddt, mask=m_r)

        # deterministic per-block partials (batch, K*D/BLOCK_D, N, L)
        tl.store(dB_ptr + part_row + (nL + offs_r[None, :]), dB_acc, mask=mm_r)
        tl.store(dC_ptr + part_row + (nL + offs_r[None, :]), dC_acc, mask=mm_r)

    ch = c0 + rows
    dA_ptrs = dA_ptr + (b * channels + ch[:, None]) * N + n[None, :]
    tl.store(dA_ptrs, dA_acc, mask=(rows[:, None] < block_d) & n_mask[None, :])


def tiled_backward(u, delta, A, B, C, D, delta_bias, dy, states, delta_softplus: bool, chunk: int,
                   block_d: int | None):
    """du, ddelta (fp32), dA per batch element (batch, K*D, N) fp32, dB, dC; `states` holds the
    state entering every `chunk` steps. `block_d` (None: `launch.choose_block_d`) must divide the
    channels per group."""
    batch, channels, length = u.shape
    n_groups, n_state = B.shape[1], A.shape[1]
    per_group = channels // n_groups
    n_tiles = states.shape[2]
    if block_d is None:
        block_d = choose_block_d(batch, channels, per_group, n_state, length, u.device)
    if per_group % block_d:
        raise ValueError(f"block_d={block_d} must divide the channels per group ({per_group})")
    n_blocks = channels // block_d
    n_p2 = next_pow2(n_state)
    dev = u.device

    du = torch.empty_like(u)
    ddelta = torch.empty((batch, channels, length), device=dev, dtype=torch.float32)
    dA_part = torch.empty((batch, channels, n_state), device=dev, dtype=torch.float32)
    dB_part = torch.empty((batch, n_blocks, n_state, length), device=dev, dtype=torch.float32)
    dC_part = torch.empty_like(dB_part)
    scratch = torch.empty((batch * n_blocks * n_p2 * chunk,), device=dev, dtype=torch.float32)
    if length > 0 and batch > 0 and channels > 0:
        _scan_bwd_kernel[(n_blocks, batch)](
            u, delta, A, B, C,
            u if D is None else D, u if delta_bias is None else delta_bias, dy, states, scratch,
            du, ddelta, dA_part, dB_part, dC_part,
            length, length,  # L, and L_row (ROW_STRIDE_NOTE in common.py)
            channels, per_group, n_groups, n_state, n_tiles, block_d, n_blocks,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            N_P2=n_p2, TL=chunk, BD_P2=next_pow2(block_d), num_warps=tiled_warps(chunk),
        )
    else:
        for t in (du, ddelta, dA_part, dB_part, dC_part):
            t.zero_()
    blocks_per_group = per_group // block_d
    dB = dB_part.view(batch, n_groups, blocks_per_group, n_state, length).sum(2).to(B.dtype)
    dC = dC_part.view(batch, n_groups, blocks_per_group, n_state, length).sum(2).to(C.dtype)
    return du, ddelta, dA_part, dB, dC

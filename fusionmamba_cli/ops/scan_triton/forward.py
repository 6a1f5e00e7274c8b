"""The forward kernel: one program per (channel, batch) walks L in tiles, carrying the state.

Inside a tile of TL steps, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t runs as a parallel
`tl.associative_scan` over the (N, TL) tile; the state (N,) passes from tile to tile in registers,
and the next tile's inputs are loaded before the current one is computed. For training it saves the
state entering every backward tile (`launch.plan_forward`), never the O(N*L) history.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fusionmamba_cli.ops.scan_triton.common import _affine_combine, _channel_constants, _softplus, next_pow2
from fusionmamba_cli.ops.scan_triton.launch import ForwardPlan


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
    L, L_row, channels, per_group, n_groups, N, n_tiles, n_saved,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr,
    N_P2: tl.constexpr, TL: tl.constexpr, SAVE_EVERY: tl.constexpr = 1,
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
    # B/C rows are L_row (== L) apart: see ROW_STRIDE_NOTE in common.py. 64-bit scalar bases,
    # 32-bit offsets inside the (N, L) slab: fewer live 64-bit registers
    bc_row = (b * n_groups + grp) * N * L_row
    B_base = B_ptr + bc_row
    C_base = C_ptr + bc_row
    nL = n[:, None] * L_row
    st_base = states_ptr + (b * channels + c) * n_saved * N

    h = tl.zeros([N_P2], dtype=tl.float32)
    # register double buffering: tile 0 loaded now, each iteration loads the next before computing
    t_mask = k < L
    nt_mask = n_mask[:, None] & t_mask[None, :]
    u_nx = tl.load(u_base + k, mask=t_mask, other=0.0)
    d_nx = tl.load(delta_base + k, mask=t_mask, other=0.0)
    B_nx = tl.load(B_base + (nL + k[None, :]), mask=nt_mask, other=0.0)
    C_nx = tl.load(C_base + (nL + k[None, :]), mask=nt_mask, other=0.0)

    for i in range(n_tiles):
        offs = i * TL + k
        t_mask = offs < L
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


def launch_forward(u, delta, A, B, C, D, delta_bias, delta_softplus: bool, plan: ForwardPlan,
                   save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """y, and the saved states (batch, K*D, plan.n_saved, N) fp32 when `save` (else a dummy);
    the inputs are contiguous, D and delta_bias may be None."""
    batch, channels, length = u.shape
    n_groups, n_state = B.shape[1], A.shape[1]
    y = torch.empty_like(u)
    states = torch.empty((batch, channels, plan.n_saved, n_state) if save else (1,),
                         device=u.device, dtype=torch.float32)
    if length > 0 and batch > 0 and channels > 0:
        _scan_fwd_kernel[(channels, batch)](
            u, delta, A, B, C,
            u if D is None else D, u if delta_bias is None else delta_bias, y, states,
            length, length,  # L, and L_row (ROW_STRIDE_NOTE in common.py)
            channels, channels // n_groups, n_groups, n_state, plan.n_tiles, plan.n_saved,
            HAS_D=D is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            SAVE_STATES=save, N_P2=next_pow2(n_state), TL=plan.tile, SAVE_EVERY=plan.save_every,
            num_warps=plan.warps,
        )
    return y, states

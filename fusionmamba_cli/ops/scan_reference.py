"""The plain sequential selective scan: slow, obviously correct, the oracle for every other backend.

Shapes (paper symbols, mamba's layout):
    u, delta:   (batch, K*D, L)    input and raw step size, K scan directions of D channels each
    A:          (K*D, N)           negative state matrix diagonal
    B, C:       (batch, K, N, L)   input/output projections, shared by the D channels of a direction
    D:          (K*D,) or None     skip connection
    delta_bias: (K*D,) or None     added to delta before the softplus
Returns y: (batch, K*D, L) in u's dtype. Computation runs in fp32 (fp64 if u is fp64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    """The scan's arithmetic precision: fp64 for fp64 input, fp32 otherwise."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def step_sizes(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, compute: torch.dtype) -> torch.Tensor:
    """Delta in `compute` precision with the per-channel bias added and softplus applied."""
    delta_c = delta.to(compute)
    if delta_bias is not None:
        delta_c = delta_c + delta_bias.to(compute)[None, :, None]
    return F.softplus(delta_c) if delta_softplus else delta_c


def prepare_scan_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    """Upcast, apply bias/softplus to delta and expand B, C from K groups to K*D channels."""
    compute = compute_dtype(u)
    u_c, delta_c = u.to(compute), step_sizes(delta, delta_bias, delta_softplus, compute)
    channels, groups = u.shape[1], B.shape[1]
    repeat = channels // groups
    B_c = B.to(compute).repeat_interleave(repeat, dim=1)  # (b, K*D, N, L)
    C_c = C.to(compute).repeat_interleave(repeat, dim=1)
    return u_c, delta_c, A.to(compute), B_c, C_c, compute


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """h_t = exp(delta_t*A) h_{t-1} + delta_t*B_t*u_t;  y_t = <C_t, h_t> + D*u_t, one step at a time."""
    u_c, delta_c, A_c, B_c, C_c, compute = prepare_scan_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    h = u_c.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(delta_c[:, :, t, None] * A_c)
        h = decay * h + (delta_c[:, :, t] * u_c[:, :, t])[:, :, None] * B_c[:, :, :, t]
        ys.append((h * C_c[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(compute)[None, :, None] * u_c
    return y.to(u.dtype)

"""The entry: `selective_scan_triton` and its autograd function (forward, then one of the backwards)."""

from __future__ import annotations

import torch

from fusionmamba_cli.ops.scan_triton import launch
from fusionmamba_cli.ops.scan_triton.backward_statewise import statewise_backward
from fusionmamba_cli.ops.scan_triton.backward_tiled import tiled_backward
from fusionmamba_cli.ops.scan_triton.common import interpreting
from fusionmamba_cli.ops.scan_triton.forward import launch_forward


def is_available() -> bool:
    """True when Triton imports (it did, or this module would not) and CUDA or the interpreter is there."""
    return bool(torch.cuda.is_available() or interpreting())


def _check_shapes(u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    """ValueError unless u (batch, K*D, L), A (K*D, N), B and C (batch, K, N, L) fit together."""
    batch, channels, length = u.shape
    n_groups, n_state = B.shape[1], A.shape[1]
    if channels % n_groups:
        raise ValueError(f"K*D={channels} is not a multiple of the number of groups K={n_groups}")
    if B.shape != (batch, n_groups, n_state, length) or C.shape != B.shape:
        raise ValueError(f"B, C must be (batch, K, N, L)={(batch, n_groups, n_state, length)}; "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")


def _forward(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit_chunk, save, backward="auto"):
    """y; when `save` also the inputs (contiguous) and states the backward needs, and the plan
    (which backward kernel, and its tile: the states are saved at its tile boundaries)."""
    _check_shapes(u, A, B, C)
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D = None if D is None else D.contiguous()
    delta_bias = None if delta_bias is None else delta_bias.contiguous()
    batch, channels, length = u.shape
    plan = launch.plan_forward(batch, channels, length, u.device, chunk=chunk, explicit_chunk=explicit_chunk,
                               save=save, backward=backward)
    y, states = launch_forward(u, delta, A, B, C, D, delta_bias, delta_softplus, plan, save)
    if not save:
        return y, None, None
    return y, (u, delta, A, B, C, D, delta_bias, states), plan


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
    return (du, ddelta.to(delta.dtype), dA, dB, dC, dD, dbias, None, None, None, None, None)


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, block_d, explicit_chunk, backward):
        y, saved, plan = _forward(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit_chunk,
                                  save=True, backward=backward)
        ctx.save_for_backward(*saved)
        # the backward kernel and its launch knobs are fixed by the forward
        ctx.config = (bool(delta_softplus), chunk, block_d, plan.impl, plan.bwd_tile)
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        delta_softplus, chunk, block_d, impl, bwd_tile = ctx.config
        dy = dy.contiguous()
        if impl == "statewise":
            grads = statewise_backward(u, delta, A, B, C, D, delta_bias, dy, states, delta_softplus, bwd_tile,
                                       launch.statewise_warps(bwd_tile))
        else:
            grads = tiled_backward(u, delta, A, B, C, D, delta_bias, dy, states, delta_softplus, chunk, block_d)
        return _finish_backward(ctx, u, delta, A, D, delta_bias, dy, *grads)


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
    backward: str = "auto",
) -> torch.Tensor:
    """Selective scan on the GPU (or the Triton interpreter); shapes as in `scan_reference`.

    `backward`: "auto" (the statewise kernel, or the tiled one when torch's deterministic
    algorithms are on), "statewise" or "tiled". `chunk` (power of two): the forward's tile when
    given (else tuned by `launch`), and the tiled backward's tile (default DEFAULT_CHUNK).
    `block_d`: channels per tiled-backward program (must divide the channels per group); None
    picks one from the shape and the device. The statewise backward ignores `block_d`.
    """
    explicit = chunk is not None
    chunk = launch.DEFAULT_CHUNK if chunk is None else chunk
    track = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, delta_bias))
    if not track:  # inference: no autograd node, no states saved
        return _forward(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, explicit, save=False)[0]
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, delta_bias, delta_softplus, chunk, block_d, explicit,
                                      backward)

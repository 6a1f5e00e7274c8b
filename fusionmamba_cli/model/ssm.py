"""The 2-D selective state-space modules: ESSM (in every DVSS block) and CMFM (in every DFFM).

Both run the same core: ES2D layout -> per-direction selective scan -> ES2D merge -> LayerNorm.
Parameter names and layouts are the authors' (k-major flat A_logs (K*D, N), Ds (K*D,), ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_cli.model.layers import LayerNorm, has_hooks
from fusionmamba_cli.ops.es2d import es2d_merge, es2d_scan, es2d_scan_time_major
from fusionmamba_cli.ops.fused import cpu_kernels_for, tensors_identity
from fusionmamba_cli.ops.selective_scan import prefers_time_major, selective_scan, selective_scan_time_major

DIRECTIONS = 4  # ES2D's four atrous sub-grids


class ScanCore2D(nn.Module):
    """Scan parameters for K=4 directions of `inner` channels, and the ES2D scan over a map.

    x_proj_weight (K, R+2N, D) gives [dt (R), B (N), C (N)] per token; dt_projs_weight (K, D, R)
    and dt_projs_bias (K, D) give delta; A = -exp(A_logs); R = ceil(model_dim / 16).
    """

    def __init__(self, model_dim: int, inner: int, d_state: int) -> None:
        super().__init__()
        self.inner, self.d_state = inner, d_state
        self.dt_rank = math.ceil(model_dim / 16)
        k, r, n = DIRECTIONS, self.dt_rank, d_state
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, inner, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, inner))
        self.A_logs = nn.Parameter(torch.empty(k * inner, n))
        self.Ds = nn.Parameter(torch.empty(k * inner))
        self.out_norm = LayerNorm(inner)
        self.scan_backend: str | None = None  # None: the dispatcher's default ($FUSIONMAMBA_SCAN_BACKEND or auto)
        self.reset_scan_parameters()

    @torch.no_grad()
    def reset_scan_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's initialisation: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max]."""
        bound = self.inner**-0.5
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(a).repeat(DIRECTIONS * self.inner, 1))
        self.Ds.fill_(1.0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) channels-first -> (B, H, W, D) channels-last, after `out_norm`."""
        norm = self.out_norm
        kernels = None if has_hooks(norm) else cpu_kernels_for(x, norm.weight, norm.bias, self.x_proj_weight)
        if kernels is not None and prefers_time_major(self.scan_backend, x.device):
            return self._scan_time_major(x, kernels)
        batch, inner, height, width = x.shape
        xs = es2d_scan(x)  # (B, K, D, L)
        length = xs.shape[-1]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.reshape(batch, -1, length),
            dts.reshape(batch, -1, length),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.scan_backend,
        )
        if kernels is not None:  # merge + channels-last + LN in one pass (no (B, D, H, W) map, no copy)
            return kernels.merge_norm(ys, height, width, norm.weight, norm.bias, norm.eps)
        y = es2d_merge(ys.reshape(batch, DIRECTIONS, inner, length), height, width)
        return norm(y.permute(0, 2, 3, 1))

    def _inference_constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A = -exp(A_logs), D and the flat dt bias in fp32, made once while no parameter changes
        (ordinary tensors, so that the scan backend can keep what it derives from them too)."""
        identity = tensors_identity(self.A_logs, self.Ds, self.dt_projs_bias)
        cached = getattr(self, "_constants", None)
        if cached is not None and identity is not None and cached[0] == identity:
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():
            constants = (-torch.exp(self.A_logs.float()), self.Ds.float(), self.dt_projs_bias.reshape(-1).float())
        if identity is not None:  # parameters made under inference mode have no version: recomputed each call
            self._constants = (identity, constants)
        return constants

    def _scan_time_major(self, x: torch.Tensor, kernels) -> torch.Tensor:
        """`scan` for CPU inference with the numba scan: every tensor (batch, K, L, channels), each
        step's channels contiguous, from the ES2D gather to the merge + LayerNorm kernel: no transposes."""
        height, width = x.shape[-2:]
        xs = es2d_scan_time_major(x)  # (B, K, L, D)
        x_dbl = torch.matmul(xs, self.x_proj_weight.transpose(1, 2))  # (B, K, L, R+2N)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=3)
        A, D, bias = self._inference_constants()
        ys = selective_scan_time_major(  # the kernel applies dt_projs to the rank-R dts itself
            xs, dts, A, Bs, Cs, D, delta_bias=bias, delta_softplus=True,
            delta_proj=self.dt_projs_weight, backend=self.scan_backend,
        )
        norm = self.out_norm
        return kernels.merge_norm_time_major(ys, height, width, norm.weight, norm.bias, norm.eps)


class ESSM(ScanCore2D):
    """Efficient state-space module (the authors' SS2D, forward type v2), channels-last in and out.

    [x | z] = in_proj(t); x -> depthwise 3x3 conv -> SiLU -> ES2D scan -> LN; out_proj(y * SiLU(z)).
    """

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2) -> None:
        inner = expand * dim
        super().__init__(dim, inner, d_state)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, 3, padding=1, groups=inner, bias=True)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(t).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.scan(x)
        return self.out_proj(y * F.silu(z))


class CMFM(ScanCore2D):
    """Cross Modality Fusion Mamba, as the authors' code computes it (channels-last P, Q -> M).

    [x1|z1] = in_proj1(P), [x2|z2] = in_proj2(Q); u_i = SiLU(dwconv(x_i)) with ONE shared conv;
    v = u1*u2 + u1 + u2 (paper Eq. 6); y = LN(ES2D-scan(v)); M = out_proj(y*g1 + y*g2) where
    g1 = SiLU(z1) and -- the authors' quirk, kept for checkpoint parity -- g2 = SiLU(SiLU(z1)):
    in_proj2's z half never reaches the output.
    """

    def __init__(self, dim: int, d_state: int = 16, expand: int = 2, attn_drop: float = 0.0) -> None:
        inner = expand * dim
        super().__init__(dim, inner, d_state)
        self.in_proj1 = nn.Linear(dim, 2 * inner, bias=False)
        self.in_proj2 = nn.Linear(dim, 2 * inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, 3, padding=1, groups=inner, bias=True)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.dropout = nn.Dropout(attn_drop)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        x1, z1 = self.in_proj1(p).chunk(2, dim=-1)
        x2, _z2_unused = self.in_proj2(q).chunk(2, dim=-1)
        gate1 = F.silu(z1)
        gate2 = F.silu(gate1)  # authors' code: z2 = SiLU(z1) after z1 was already SiLU'd
        u1 = F.silu(self.conv2d(x1.permute(0, 3, 1, 2)))
        u2 = F.silu(self.conv2d(x2.permute(0, 3, 1, 2)))
        y = self.scan(u1 * u2 + u1 + u2)
        return self.dropout(self.out_proj(y * gate1 + y * gate2))

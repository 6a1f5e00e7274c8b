"""Dynamic Feature Fusion Module (DFFM) = two DFEMs + CMFM, as the authors' code computes it."""

from __future__ import annotations

import torch
from torch import nn

from fusionmamba_cli.model.blocks import DVSSBlock
from fusionmamba_cli.model.layers import ECA, LDC
from fusionmamba_cli.model.ssm import CMFM


class DFEM(nn.Module):
    """Dynamic Feature Enhancement for both modalities at once (channels-last a, b -> F1, F2).

    F = a + b; w12 = sigmoid(mean_hw(a - b)), w21 = sigmoid(mean_hw(b - a)) (weight-free);
    F1 = LDC1(a) + a + w12 F;  F2 = LDC2(b) + b + w21 F.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.texture_enhance1 = LDC(dim)
        self.texture_enhance2 = LDC(dim)
        self.Diff_enhance = nn.Module()
        # Declared by the authors but never called; kept so their checkpoints load strictly.
        self.Diff_enhance.lastconv = nn.Conv2d(dim, dim // 2, 1)

    @staticmethod
    def _texture(ldc: LDC, x: torch.Tensor) -> torch.Tensor:
        return ldc(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = a + b
        w12 = torch.sigmoid((a - b).mean(dim=(1, 2), keepdim=True))
        w21 = torch.sigmoid((b - a).mean(dim=(1, 2), keepdim=True))
        f1 = self._texture(self.texture_enhance1, a) + a + w12 * coarse
        f2 = self._texture(self.texture_enhance2, b) + b + w21 * coarse
        return f1, f2


class DFFM(nn.Module):
    """out = a + b + M + ECA(M), M = CMFM(LN1 F1, LN2 F2): the residual uses the raw a and b
    (paper Eq. 8 adds D1, D2 and puts an LN before ECA; the code does not).

    Ablations (Table 7): use_dfem=False feeds a, b to the CMFM directly; use_cmfm=False returns
    a + b + F1 + F2 (the enhanced features, no cross-modality scan).
    """

    def __init__(self, dim: int, d_state: int = 16, attn_drop: float = 0.0, use_dfem: bool = True, use_cmfm: bool = True) -> None:
        super().__init__()
        self.use_dfem, self.use_cmfm = use_dfem, use_cmfm
        self.ln_1 = nn.LayerNorm(dim)
        self.ln_2 = nn.LayerNorm(dim)
        if use_dfem:
            self.Cross_layer = DFEM(dim)
        if use_cmfm:
            self.self_attention_cross = CMFM(dim, d_state=d_state, attn_drop=attn_drop)
            self.self_attention_cross_spatial = ECA()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.Cross_layer(a, b) if self.use_dfem else (a, b)
        if not self.use_cmfm:
            return a + b + f1 + f2
        m = self.self_attention_cross(self.ln_1(f1), self.ln_2(f2))
        return a + b + m + self.self_attention_cross_spatial(m)


class DVSSFusion(nn.Module):
    """Table 7, "DFFM -> DVSS": fuse a level by one DVSS block on a + b."""

    def __init__(self, dim: int, d_state: int = 16) -> None:
        super().__init__()
        self.block = DVSSBlock(dim, d_state=d_state)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.block(a + b)

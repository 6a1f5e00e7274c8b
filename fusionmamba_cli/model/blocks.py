"""Feature-extraction blocks (channels-last in and out): the DVSS block and its Table 7 stand-ins."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_cli.model.layers import ECA, LDC, DropPath, LayerNorm, Mlp, SqueezeExcite, has_hooks
from fusionmamba_cli.model.ssm import ESSM


class DVSSBlock(nn.Module):
    """Dynamic Vision State Space block, as the authors' code computes it (not quite paper Eq. 5):

        s = ESSM(LN t);  e = s + ECA(s);  c = LDC(e);  g = SE(s) + SE(c)   (one shared SE)
        u = t + DropPath(g);  out = u + DropPath(MLP(LN2 u))
    """

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.op = ESSM(dim, d_state=d_state)
        self.conv_branch = LDC(dim)
        self.self_attention_cross_channel = ECA()
        self.se = SqueezeExcite(dim)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        s = self.op(self.norm(t))
        eca, se = self.self_attention_cross_channel, self.se
        if self.training or has_hooks(eca, se):  # the authors' sequence of modules, as written
            e = s + eca(s)
            c = self.conv_branch(e.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            u = t + self.drop_path(se(s) + se(c))
        else:  # inference: the same sums as fused multiply-adds (3 passes over the map instead of 7)
            e = torch.addcmul(s, s, eca.channel_weights(s))
            c = self.conv_branch(e.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            u = torch.addcmul(torch.addcmul(t, s, se.gate(s)), c, se.gate(c))
        return u + self.drop_path(self.mlp(self.norm2(u)))


class EVSSBlock(nn.Module):
    """EfficientVMamba's EVSS block (Table 7, "DVSS -> EVSS"): global ES2D branch plus a local
    depthwise-conv branch, each SE-gated, then the same FFN; no LDC and no ECA."""

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.op = ESSM(dim, d_state=d_state)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.se = SqueezeExcite(dim)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        normed = self.norm(t)
        s = self.op(normed)
        c = self.local(normed.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        u = t + self.drop_path(self.se(s) + self.se(c))
        return u + self.drop_path(self.mlp(self.norm2(u)))


class TransformerBlock(nn.Module):
    """Pre-norm global self-attention + FFN (Table 7, "DVSS -> Transformer"); heads of 16 channels."""

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0) -> None:
        super().__init__()
        del d_state  # same signature as the other blocks
        self.heads = max(1, dim // 16)
        self.norm = LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = t.shape
        qkv = self.qkv(self.norm(t)).reshape(batch, height * width, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, height, width, dim)
        u = t + self.drop_path(self.proj(attended))
        return u + self.drop_path(self.mlp(self.norm2(u)))


BLOCKS: dict[str, type[nn.Module]] = {"dvss": DVSSBlock, "evss": EVSSBlock, "transformer": TransformerBlock}

"""DATFuse's network (Tang et al., IEEE TCSVT 2023, github.com/tthinking/DATFuse), re-implemented for
CPU timing only: random weights, output quality irrelevant. Not a test, not part of the package.

Written from reading `Networks/network.py` of the authors' repository (commit c6e1ca2) and matching
its layers, shapes and the work its forward does, as `Test.py` builds it (`MODEL(in_channel=2)`):

* the two sources stacked as 2 channels; replicate-pad 2, conv 5x5 2 -> 16, BN, ReLU  (c)
* DARM (dual attention residual module), run twice with ONE set of weights:
  f = BN(conv3(pad(ReLU(BN(conv3(pad(x)))))))  -- the same 3x3 16 -> 16 conv and BN both times;
  channel attention sigmoid(1x1 4 -> 16 (ReLU(1x1 16 -> 4 (avgpool f))));
  spatial attention sigmoid(BN(conv3 4 -> 1 (ReLU(BN(conv3 16 -> 4 f)))));
  encoder: ReLU(f * ca + f * sa + c); decoder: f * ca + f * sa + f
* between them two Swin blocks at C = 16, 8 heads, window 1 (shift 0), MLP ratio 4, the map read
  as (B, H, W, C) by a plain view of the (B, C, H, W) tensor as the authors do; at an input size
  other than the training size (120) each block rebuilds its (all-zero) attention mask, as theirs
  does, and adds it to the 1x1 attention logits
* 1x1 conv 16 -> 1, tanh.

Usage: python bench/datfuse_cpu.py [--size 256] [--threads 2] [--warmup 3] [--repeat 10] [--json]
Timing is `fusionmamba_cli.benchmarking.measure_latency` (the method of `fusionmamba benchmark`:
warm-up calls, then the median of `repeat` timed calls) under torch.inference_mode.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_cli.benchmarking import measure_latency


class ConvBNReLU(nn.Module):
    """Replicate padding, a k x k conv, BatchNorm, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, relu: bool = True) -> None:
        super().__init__()
        self.pad = k // 2
        self.conv = nn.Conv2d(c_in, c_out, k)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(F.pad(x, (self.pad,) * 4, mode="replicate")))
        return F.relu(y) if self.relu else y


class DualAttention(nn.Module):
    """The feature module (one 3x3 conv + BN applied twice) with channel and spatial attention."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3)
        self.bn = nn.BatchNorm2d(c)
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // reduction, 1), nn.ReLU(),
                                nn.Conv2d(c // reduction, c, 1), nn.Sigmoid())
        self.sa = nn.Sequential(nn.Conv2d(c, c // reduction, 3, padding=1), nn.BatchNorm2d(c // reduction), nn.ReLU(),
                                nn.Conv2d(c // reduction, 1, 3, padding=1), nn.BatchNorm2d(1), nn.Sigmoid())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))))
        return self.bn(self.conv(F.pad(y, (1, 1, 1, 1), mode="replicate")))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        f = self.features(x)
        out = f * self.ca(f) + f * self.sa(f)
        return out + (f if residual is None else residual)


class WindowOneSwinBlock(nn.Module):
    """A Swin block with 1x1 windows: each token's attention is over itself (softmax of one logit)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros(1, heads))  # (2*1-1)^2 relative positions
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    @staticmethod
    def _mask(height: int, width: int) -> torch.Tensor:
        """The shift mask the authors rebuild per call at a new size; all zero for window 1, shift 0."""
        regions = torch.zeros(1, height, width, 1)
        windows = regions.reshape(-1, 1)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        t = x.view(batch, height, width, channels)  # the authors' view, not a permute
        shortcut = t
        windows = self.norm1(t.reshape(-1, channels)).view(-1, 1, channels)  # (B*H*W, 1, C)
        n = windows.shape[0]
        qkv = self.qkv(windows).reshape(n, 1, 3, self.heads, channels // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (channels // self.heads) ** -0.5, qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1) + self.bias_table.t()[:, :, None]
        mask = self._mask(height, width)
        logits = (logits.view(n // mask.shape[0], mask.shape[0], self.heads, 1, 1) + mask.unsqueeze(1).unsqueeze(0))
        attended = (logits.view(-1, self.heads, 1, 1).softmax(dim=-1) @ v).transpose(1, 2).reshape(n, 1, channels)
        t = shortcut + self.proj(attended).view(batch, height, width, channels)
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return t.view(batch, channels, height, width)


class DATFuseNet(nn.Module):
    """DATFuse as `MODEL(in_channel=2)`: 16 channels, two window-1 Swin blocks of 8 heads."""

    def __init__(self, channels: int = 16, heads: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.stem = ConvBNReLU(2, channels, 5)
        self.darm = DualAttention(channels)  # shared by encoder and decoder
        self.blocks = nn.ModuleList(WindowOneSwinBlock(channels, heads) for _ in range(depth))
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.stem(x)
        t = F.relu(self.darm(c, residual=c))
        for block in self.blocks:
            t = block(t)
        return torch.tanh(self.out(self.darm(t, residual=None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DATFuseNet().eval()
    gen = torch.Generator().manual_seed(0)
    pair = torch.rand(1, 2, args.size, args.size, generator=gen)
    with torch.inference_mode():
        latency = measure_latency(lambda: model(pair), torch.device("cpu"), warmup=args.warmup, repeat=args.repeat)
    row = {"model": "DATFuse (bench/datfuse_cpu.py, random weights)", "params": sum(p.numel() for p in model.parameters()),
           "threads": torch.get_num_threads(), "size": args.size, "load_average": os.getloadavg(), **latency}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"DATFuse {args.size}x{args.size}, {row['threads']} threads: median {latency['latency_ms']:.1f} ms "
              f"(IQR {latency['latency_p25_ms']:.1f}-{latency['latency_p75_ms']:.1f}), {row['params']} parameters")


if __name__ == "__main__":
    main()

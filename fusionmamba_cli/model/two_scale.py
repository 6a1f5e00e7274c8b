"""A classical two-scale fusion rule in torch: the base of the fused image is the brighter of the two
blurred sources, the detail is each pixel's stronger source detail, slightly amplified.

    T = clip(max(G_s*A, G_s*B) + g * (w * (A - G_s*A) + (1 - w) * (B - G_s*B)), f * max(A, B), 1)

G_s is a Gaussian blur of sigma s; w is 1 where A has the higher local detail energy (a Gaussian of
sigma 2 over the squared detail), softened by a sigma-1 blur so that the choice has no hard seams. The floor f limits halos: where
one source has a strong edge next to the other's flat content (a CT skull beside MRI tissue), the
selected detail would push T to black; no pixel gets darker than f times the brighter source.
It is the starting point of the network's `two_scale` output skip (the head learns a correction)
and the anchor of the `two-scale` training loss. Every operation is differentiable and shape-agnostic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TwoScaleParams:
    """Base blur sigma (pixels), detail gain, halo floor and the detail-energy window's sigma."""

    base_sigma: float = 4.0
    detail_gain: float = 1.0
    floor: float = 0.3
    energy_sigma: float = 2.0
    weight_sigma: float = 1.0


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images, radius 3 sigma, reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    # reflect needs the pad below the side; replicate the rest (tiny crops)
    height, width = x.shape[-2:]
    mode = "reflect" if radius < min(height, width) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), vertical, groups=channels)


def detail_weight(detail_a: torch.Tensor, detail_b: torch.Tensor, params: TwoScaleParams) -> torch.Tensor:
    """Soft choice map in [0, 1]: 1 where A's local detail energy is the higher."""
    energy_a = gaussian_blur(detail_a.square(), params.energy_sigma)
    energy_b = gaussian_blur(detail_b.square(), params.energy_sigma)
    choice = (energy_a > energy_b).to(detail_a.dtype)
    return gaussian_blur(choice, params.weight_sigma) if params.weight_sigma > 0 else choice


def two_scale_fusion(a: torch.Tensor, b: torch.Tensor, params: TwoScaleParams = TwoScaleParams(), clamp: bool = True) -> torch.Tensor:
    """The two-scale rule T for (B, 1, H, W) images in [0, 1] (module docstring)."""
    base_a, base_b = gaussian_blur(a, params.base_sigma), gaussian_blur(b, params.base_sigma)
    detail_a, detail_b = a - base_a, b - base_b
    w = detail_weight(detail_a, detail_b, params)
    fused = torch.maximum(base_a, base_b) + params.detail_gain * (w * detail_a + (1 - w) * detail_b)
    if params.floor > 0:
        fused = torch.maximum(fused, params.floor * torch.maximum(a, b))
    return fused.clamp(0, 1) if clamp else fused

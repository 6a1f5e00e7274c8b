"""A classical two-scale fusion rule in torch: the base of the fused image is the brighter of the two
blurred sources, the detail is each pixel's stronger source detail, slightly amplified.

    T = clip(max(G_s*A, G_s*B) + g * (w * (A - G_s*A) + (1 - w) * (B - G_s*B)), f * max(A, B), 1)

G_s is a Gaussian blur of sigma s; w is 1 where A has the higher local detail energy (a Gaussian of
sigma 2 over the squared detail), softened by a sigma-1 blur so that the choice has no hard seams. The floor f limits halos: where
one source has a strong edge next to the other's flat content (a CT skull beside MRI tissue), the
selected detail would push T to black; no pixel gets darker than f times the brighter source.
For PET and SPECT, whose low-resolution scans come upsampled in 4-pixel blocks, the rule may first
blur x2 a little (`smooth_x2`): its finest scale holds only block edges, which the detail choice
would otherwise carry into T as a 4-pixel grid (the floor still uses the unblurred source).
It is the starting point of the network's `two_scale` output skip (the head learns a correction)
and the anchor of the `two-scale` training loss. Every operation is differentiable and shape-agnostic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusionmamba_cli.ops.fused import cpu_kernels_for


@dataclass(frozen=True)
class TwoScaleParams:
    """Base blur sigma (pixels), detail gain, halo floor, the detail-energy window's sigma, the
    choice map's softening sigma (0: a hard choice) and the pre-blur of x2 (0: none)."""

    base_sigma: float = 4.0
    detail_gain: float = 1.0
    floor: float = 0.3
    energy_sigma: float = 2.0
    weight_sigma: float = 1.0
    smooth_x2: float = 0.0


# Each task's rule, chosen on the hold-out split (every 5th training pair; all 3 for gfp_pc), never on
# test (BENCHMARKS.md, "Round 7: a rule per task"). A larger detail-energy window makes the choice
# follow whole structures (VIF rewards selecting a source); ir_vis gains detail for SF; ct_mri's hard
# choice keeps CT edges crisp; PET/SPECT are pre-blurred against their 4-px blocks; GFP-PC's wide base
# keeps both cells' shading (SCD).
TASK_RULES: dict[str, TwoScaleParams] = {
    "ir_vis": TwoScaleParams(base_sigma=8.0, detail_gain=1.15, energy_sigma=8.0),
    "ct_mri": TwoScaleParams(base_sigma=8.0, floor=0.2, energy_sigma=4.0, weight_sigma=0.0),
    "pet_mri": TwoScaleParams(base_sigma=4.0, smooth_x2=1.0),
    "spect_mri": TwoScaleParams(base_sigma=4.0, smooth_x2=1.0),
    "gfp_pc": TwoScaleParams(base_sigma=24.0),
}


# TwoScaleParams field -> the FusionMambaConfig field that stores it (the "two_scale" skip's rule)
CONFIG_FIELDS = {"base_sigma": "two_scale_sigma", "detail_gain": "two_scale_gain", "floor": "two_scale_floor",
                 "energy_sigma": "two_scale_energy_sigma", "weight_sigma": "two_scale_weight_sigma",
                 "smooth_x2": "two_scale_smooth_x2"}


def config_fields(params: TwoScaleParams) -> dict[str, float]:
    """The FusionMambaConfig fields (two_scale_*) that give a model this rule as its skip."""
    return {field: getattr(params, name) for name, field in CONFIG_FIELDS.items()}


def params_from_config(config) -> TwoScaleParams:
    """The rule a FusionMambaConfig's two_scale_* fields describe (the inverse of `config_fields`)."""
    return TwoScaleParams(**{name: getattr(config, field) for name, field in CONFIG_FIELDS.items()})


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images, radius 3 sigma, reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    # reflect needs the pad below the side; replicate the rest (tiny crops)
    height, width = x.shape[-2:]
    reflect = radius < min(height, width)
    kernels = cpu_kernels_for(x)
    if kernels is not None:  # CPU inference: OpenCV's separable filter, ~14x faster than a 1-channel conv2d
        return kernels.separable_filter(x, kernel, reflect)
    mode = "reflect" if reflect else "replicate"
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), vertical, groups=channels)


def detail_weight(detail_a: torch.Tensor, detail_b: torch.Tensor, params: TwoScaleParams) -> torch.Tensor:
    """Soft choice map in [0, 1]: 1 where A's local detail energy is the higher."""
    energy_a = gaussian_blur(detail_a.square(), params.energy_sigma)
    energy_b = gaussian_blur(detail_b.square(), params.energy_sigma)
    choice = (energy_a > energy_b).to(detail_a.dtype)
    return gaussian_blur(choice, params.weight_sigma) if params.weight_sigma > 0 else choice


def two_scale_fusion(a: torch.Tensor, b: torch.Tensor, params: TwoScaleParams = TwoScaleParams(), clamp: bool = True) -> torch.Tensor:
    """The two-scale rule T for (B, 1, H, W) images in [0, 1] (module docstring); a is x1, b is x2."""
    brighter = torch.maximum(a, b) if params.floor > 0 else None  # the floor's, from the unblurred sources
    if params.smooth_x2 > 0:
        b = gaussian_blur(b, params.smooth_x2)
    base_a, base_b = gaussian_blur(a, params.base_sigma), gaussian_blur(b, params.base_sigma)
    detail_a, detail_b = a - base_a, b - base_b
    w = detail_weight(detail_a, detail_b, params)
    fused = torch.maximum(base_a, base_b) + params.detail_gain * (w * detail_a + (1 - w) * detail_b)
    if params.floor > 0:
        fused = torch.maximum(fused, params.floor * brighter)
    return fused.clamp(0, 1) if clamp else fused

"""The paper's fusion losses (section 3.6, Eq. 9-12), on (B, 1, H, W) tensors in [0, 1].

L_total = a1 * L_int + a2 * L_text + a3 * L_ssim with
    L_int  = mean |F - max(I1, I2)|  or  mean (F - max(I1, I2))^2
                                                             (Eq. 11: the paper writes the L2 norm,
                                                             the authors' code uses L1; both offered)
    L_text = mean | |grad F| - max(|grad I1|, |grad I2|) |   (Eq. 10; Sobel, |gx| + |gy|)
    L_ssim = (1 - SSIM(I1, F)) / 2 + (1 - SSIM(I2, F)) / 2    (Eq. 12; 11x11 Gaussian, sigma 1.5)
Paper weights (1, 1, 10); the authors' code uses (10, 10, 1). A weight of 0 switches a term off
(the Table 8 ablations). The norm matters beyond scale: L1 has a kink at max(I1, I2), so a network
that can output max(I1, I2) exactly stays there; the squared error has zero slope there and lets the
texture and SSIM terms pull the output away from it (BENCHMARKS.md, training round 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|gx| + |gy| of (B, 1, H, W) images, Sobel kernels, replicate border."""
    kx = _SOBEL_X.to(x.device, x.dtype)
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads.abs().sum(dim=1, keepdim=True)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) images in [0, 1] (Wang et al.; separable Gaussian, valid region)."""
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    pad = 0 if min(x.shape[-2:]) >= window else None
    if pad is None:  # tiny crops: fall back to a window that fits
        size = min(x.shape[-2:]) | 1
        g = _gaussian_window(size, sigma, x.device, x.dtype)
    gh, gv = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh), gv)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean()


@dataclass(frozen=True)
class LossWeights:
    """a1, a2, a3 of Eq. 9."""

    intensity: float = 10.0
    texture: float = 10.0
    ssim: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LossWeights":
        """'10,10,1' -> LossWeights(10, 10, 1); also the names 'paper' and 'code'."""
        named = {"paper": cls(1.0, 1.0, 10.0), "code": cls(10.0, 10.0, 1.0)}
        if text in named:
            return named[text]
        parts = [float(p) for p in text.split(",")]
        if len(parts) != 3 or any(p < 0 for p in parts):
            raise ValueError(f"loss weights must be three non-negative numbers 'int,text,ssim', got {text!r}")
        return cls(*parts)


INTENSITY_NORMS = ("l1", "l2")


def fusion_loss(fused: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor, weights: LossWeights,
                intensity_norm: str = "l1") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its (detached, on-device) terms. `fused` is the raw network output (not
    clamped, so pixels outside [0, 1] still get a gradient back into range). `intensity_norm` is
    "l1" (mean absolute error, the authors' code) or "l2" (mean squared error, the paper's Eq. 11)."""
    if intensity_norm not in INTENSITY_NORMS:
        raise ValueError(f"intensity norm must be one of {INTENSITY_NORMS}, got {intensity_norm!r}")
    fused, i1, i2 = fused.float(), i1.float(), i2.float()
    terms: dict[str, torch.Tensor] = {}
    if weights.intensity:
        error = fused - torch.maximum(i1, i2)
        terms["int"] = error.abs().mean() if intensity_norm == "l1" else error.square().mean()
    if weights.texture:
        target = torch.maximum(sobel_magnitude(i1), sobel_magnitude(i2))
        terms["text"] = (sobel_magnitude(fused) - target).abs().mean()
    if weights.ssim:
        terms["ssim"] = 0.5 * (1 - ssim(i1, fused)) + 0.5 * (1 - ssim(i2, fused))
    scale = {"int": weights.intensity, "text": weights.texture, "ssim": weights.ssim}
    total = sum(scale[name] * value for name, value in terms.items())
    if not terms:
        raise ValueError("all loss terms are switched off")
    return total, {name: value.detach() for name, value in terms.items()}

"""Training objectives (`train --loss NAME`), on (B, 1, H, W) tensors in [0, 1].

`two-scale` (the default; what the shipped task weights were trained with): the output is pulled
towards the two-scale rule T of `model/two_scale.py`, pixel, signed Sobel and SSIM terms,
    L = |F - T| + 2 (|Sx F - Sx T| + |Sy F - Sy T|) + 0.5 (1 - SSIM(F, T))
plus `vif_weight` times a differentiable VIF (the metric's vifp_mscale on 0..255 values) and
`qabf_weight` times a differentiable Qabf (the metric's own formula) to reward what the metrics reward, and a penalty on values outside [0, 1] (they clip). The signed Sobel
keeps edge orientation, which Qabf scores. Why not the paper's loss: its optimum is max(I1, I2)
itself (BENCHMARKS.md, training rounds 3-4), which scores below the classical methods.

`authors`: the authors' code (`loss.py`): 10 MSE(F, max) + 1 L1(|grad F|, max |grad I|)
+ 10 (1 - MS-SSIM), MS-SSIM averaged over the two sources.

`paper`: the paper's losses (section 3.6, Eq. 9-12):

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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fusionmamba_cli.metrics.vif import vif_window_1d
from fusionmamba_cli.model.two_scale import TwoScaleParams, two_scale_fusion

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_xy(x: torch.Tensor) -> torch.Tensor:
    """Signed Sobel responses (B, 2, H, W) of (B, 1, H, W) images: horizontal then vertical, replicate border."""
    kx = _SOBEL_X.to(x.device, x.dtype)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.t()])[:, None])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|gx| + |gy| of (B, 1, H, W) images, Sobel kernels, replicate border."""
    return sobel_xy(x).abs().sum(dim=1, keepdim=True)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable blur of (B, 1, H, W) images with the 1-D window `g`, valid region only."""
    return F.conv2d(F.conv2d(t, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


def _local_moments(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Local means, variances and covariance of x and y under the window `g` (the SSIM statistics)."""
    mu_x, mu_y = _blur_valid(x, g), _blur_valid(y, g)
    var_x = _blur_valid(x * x, g) - mu_x**2
    var_y = _blur_valid(y * y, g) - mu_y**2
    cov = _blur_valid(x * y, g) - mu_x * mu_y
    return mu_x, mu_y, var_x, var_y, cov


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) images in [0, 1] (Wang et al.; separable Gaussian, valid region)."""
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    pad = 0 if min(x.shape[-2:]) >= window else None
    if pad is None:  # tiny crops: fall back to a window that fits
        size = min(x.shape[-2:]) | 1
        g = _gaussian_window(size, sigma, x.device, x.dtype)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y, var_x, var_y, cov = _local_moments(x, y, g)
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


LOSS_NAMES = ("two-scale", "paper", "authors")


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and contrast-structure term (11x11 Gaussian or smaller on tiny images, valid region)."""
    g = _gaussian_window(min(11, *x.shape[-2:]), 1.5, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y, var_x, var_y, cov = _local_moments(x, y, g)
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(), cs.mean()


_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_authors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM as the authors' bundled `pytorch_msssim.msssim(..., normalize=True)` computes it:
    5 scales (2x2 average pooling), each value mapped to (v + 1) / 2, and its product quirk
    prod_i(cs_i^w_i * ssim_5^w_5) over the first four scales (so ssim_5 counts four times)."""
    weights = torch.tensor(_MS_SSIM_WEIGHTS, device=x.device, dtype=x.dtype)
    ssims, css = [], []
    for level in range(len(_MS_SSIM_WEIGHTS)):
        sim, cs = _ssim_and_cs(x, y, data_range=1.0)
        ssims.append((sim + 1) / 2)
        css.append((cs + 1) / 2)
        if level < len(_MS_SSIM_WEIGHTS) - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    cs_pow = torch.stack(css) ** weights
    ssim_pow = torch.stack(ssims) ** weights
    return torch.prod(cs_pow[:-1] * ssim_pow[-1])


def authors_loss(fused: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The authors' `Fusionloss`: 10 (1 - MS-SSIM) + 10 MSE(F, max) + 1 L1 of the Sobel magnitudes."""
    terms = {
        "ssim": 0.5 * (1 - ms_ssim_authors(fused, i1)) + 0.5 * (1 - ms_ssim_authors(fused, i2)),
        "int": F.mse_loss(fused, torch.maximum(i1, i2)),
        "text": F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(i1), sobel_magnitude(i2))),
    }
    total = 10 * terms["ssim"] + 10 * terms["int"] + terms["text"]
    return total, {name: value.detach() for name, value in terms.items()}


_VIF_SIGMA_NSQ = 2.0  # the metric's constants (metrics/vif.py)
_VIF_EPS = 1e-10


def _vif_scale_terms(ref: torch.Tensor, dist: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image numerator and denominator sums of one VIF scale (the metric's corrections, smooth
    where the metric is: the masks only pick which formula applies)."""
    _, _, s1, s2, s12 = _local_moments(ref, dist, g)
    s1, s2 = s1.clamp_min(0), s2.clamp_min(0)
    gain = s12 / (s1 + _VIF_EPS)
    sv = s2 - gain * s12
    low1, low2 = s1 < _VIF_EPS, s2 < _VIF_EPS
    gain = torch.where(low1 | low2, torch.zeros_like(gain), gain)
    sv = torch.where(low1, s2, torch.where(low2, torch.zeros_like(sv), sv))
    s1 = torch.where(low1, torch.zeros_like(s1), s1)
    negative = gain < 0
    sv = torch.where(negative, s2, sv)
    gain = torch.where(negative, torch.zeros_like(gain), gain)
    sv = sv.clamp_min(_VIF_EPS)
    num = torch.log10(1 + gain * gain * s1 / (sv + _VIF_SIGMA_NSQ)).sum(dim=(1, 2, 3))
    den = torch.log10(1 + s1 / _VIF_SIGMA_NSQ).sum(dim=(1, 2, 3))
    return num, den


def vif_differentiable(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Per-image multiscale pixel VIF of `dist` against `ref` ((B, 1, H, W) in [0, 1], scored on
    0..255 values as the metric is), differentiable in `dist`."""
    ref, dist = ref * 255.0, dist * 255.0
    num = den = 0.0
    for scale in range(1, 5):
        g = torch.from_numpy(vif_window_1d(scale)).to(ref.device, ref.dtype)  # the metric's window
        if scale > 1:
            ref = _blur_valid(ref, g)[..., ::2, ::2]
            dist = _blur_valid(dist, g)[..., ::2, ::2]
        n, d = _vif_scale_terms(ref, dist, g)
        num, den = num + n, den + d
    return num / den.clamp_min(_VIF_EPS)


_QABF_G = (0.9994, -15.0, 0.5)  # the metric's sigmoid constants (metrics/qabf.py)
_QABF_A = (0.9879, -22.0, 0.8)


def _qabf_strength_and_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and angle atan(Sy / Sx) of (B, 1, H, W) 0..255 images as the metric takes them
    (true convolution, zero padding). The angle is atan2 folded into (-pi/2, pi/2], which equals
    atan(Sy / Sx) with a bounded gradient where Sx is near 0; where there is no gradient at all the
    metric's pi/2 is used and atan2 never sees (0, 0), whose backward is 0/0."""
    kx = -_SOBEL_X.to(x.device, x.dtype)  # convolution flips the kernel: left column minus right
    s = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.stack([kx, -kx.t()])[:, None])  # Sy: bottom minus top
    sx, sy = s[:, :1], s[:, 1:]
    energy = sx * sx + sy * sy
    edge = energy > 1e-12
    g = torch.sqrt(torch.where(edge, energy, torch.ones_like(energy))) * edge
    angle = torch.atan2(torch.where(edge, sy, torch.zeros_like(sy)), torch.where(edge, sx, torch.ones_like(sx)))
    angle = torch.where(angle > math.pi / 2, angle - math.pi, torch.where(angle <= -math.pi / 2, angle + math.pi, angle))
    return g, torch.where(edge, angle, torch.full_like(angle, math.pi / 2))


def _qabf_preservation(g_x: torch.Tensor, a_x: torch.Tensor, g_f: torch.Tensor, a_f: torch.Tensor) -> torch.Tensor:
    """Per-pixel Q_XF = Q_g Q_alpha, Q_g of the weaker over the stronger strength (the metric's
    formula, its g_X == g_F quirk aside: a tie of two real-valued strengths has measure zero)."""
    ratio = torch.minimum(g_x, g_f) / torch.maximum(g_x, g_f).clamp_min(1e-6)
    a_xf = 1 - (a_x - a_f).abs() / (math.pi / 2)
    (tg, kg, dg), (ta, ka, da) = _QABF_G, _QABF_A
    return tg / (1 + torch.exp(kg * (ratio - dg))) * (ta / (1 + torch.exp(ka * (a_xf - da))))


def qabf_differentiable(i1: torch.Tensor, i2: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """Per-image Qabf of `fused` for the sources ((B, 1, H, W) in [0, 1], scored on 0..255 values as
    the metric is), differentiable in `fused`: sum(Q_AF g_A + Q_BF g_B) / sum(g_A + g_B)."""
    with torch.no_grad():
        g1, a1 = _qabf_strength_and_angle(i1 * 255.0)
        g2, a2 = _qabf_strength_and_angle(i2 * 255.0)
    gf, af = _qabf_strength_and_angle(fused * 255.0)
    q = _qabf_preservation(g1, a1, gf, af) * g1 + _qabf_preservation(g2, a2, gf, af) * g2
    return q.sum(dim=(1, 2, 3)) / (g1 + g2).sum(dim=(1, 2, 3)).clamp_min(1e-12)


ANCHOR_NORMS = ("l1", "l2")


def two_scale_loss(fused: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor, target: TwoScaleParams,
                   vif_weight: float = 0.0, anchor: str = "l1",
                   qabf_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The `two-scale` objective (module docstring): anchor to the rule T, optional VIF reward.
    `anchor="l1"` is the scout's loss; its kink at F = T holds the output at T against a small VIF
    reward (a GPU run stayed within 1e-6 of T), so `"l2"` squares the pixel and Sobel differences
    (weights 100 and 50: a few grey levels cost about what the VIF reward pays)."""
    with torch.no_grad():
        t = two_scale_fusion(i1, i2, target)
    pixel, edges = fused - t, sobel_xy(fused) - sobel_xy(t)
    if anchor == "l1":
        terms = {"int": pixel.abs().mean(), "text": edges.abs().mean() * 2}  # |Sx| + |Sy|, averaged x2
        weights = {"int": 1.0, "text": 2.0}
    elif anchor == "l2":
        terms = {"int": pixel.square().mean(), "text": edges.square().mean()}
        weights = {"int": 100.0, "text": 50.0}
    else:
        raise ValueError(f"anchor must be one of {ANCHOR_NORMS}, got {anchor!r}")
    terms["ssim"] = 1 - ssim(fused, t)
    terms["range"] = (F.relu(fused - 1) + F.relu(-fused)).mean()
    total = weights["int"] * terms["int"] + weights["text"] * terms["text"] + 0.5 * terms["ssim"] + 10 * terms["range"]
    if vif_weight:
        terms["vif"] = (vif_differentiable(i1, fused) + vif_differentiable(i2, fused)).mean()
        total = total - vif_weight * terms["vif"]
    if qabf_weight:
        terms["qabf"] = qabf_differentiable(i1, i2, fused).mean()
        total = total - qabf_weight * terms["qabf"]
    return total, {name: value.detach() for name, value in terms.items()}


@dataclass(frozen=True)
class Objective:
    """A named training objective with its settings: `objective(fused, i1, i2) -> (total, terms)`."""

    name: str = "two-scale"
    weights: LossWeights = LossWeights.parse("paper")
    intensity_norm: str = "l2"
    target: TwoScaleParams = TwoScaleParams()
    vif_weight: float = 0.0
    anchor: str = "l1"
    qabf_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {', '.join(LOSS_NAMES)}, got {self.name!r}")
        for label, weight in (("VIF", self.vif_weight), ("Qabf", self.qabf_weight)):
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"the {label} weight must be a non-negative number, got {weight}")
        if self.anchor not in ANCHOR_NORMS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHOR_NORMS)}, got {self.anchor!r}")

    def __call__(self, fused: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused, i1, i2 = fused.float(), i1.float(), i2.float()
        if self.name == "two-scale":
            return two_scale_loss(fused, i1, i2, self.target, self.vif_weight, self.anchor, self.qabf_weight)
        if self.name == "authors":
            return authors_loss(fused, i1, i2)
        return fusion_loss(fused, i1, i2, self.weights, self.intensity_norm)

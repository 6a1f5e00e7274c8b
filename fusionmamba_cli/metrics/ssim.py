"""SSIM (scikit-image defaults) and MS-SSIM (pytorch-msssim 1.0.0 defaults), README section 3.

Convention: inputs are 2-D grey-level arrays 0..255, computed in float64 with data_range = 255.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._filters import box_mean_valid, correlate_valid_separable
from .grey import as_grey_float64, check_triplet

__all__ = ["ssim", "ssim_pair", "ms_ssim", "ms_ssim_pair", "MS_SSIM_MIN_SIDE", "msssim_window_1d"]

_DATA_RANGE = 255.0
_K1, _K2 = 0.01, 0.03
_C1 = (_K1 * _DATA_RANGE) ** 2
_C2 = (_K2 * _DATA_RANGE) ** 2

_SSIM_WIN = 7
_MS_WIN, _MS_SIGMA = 11, 1.5
_MS_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=np.float64)
# README MS-SSIM: Wang's 5-scale definition needs min(H, W) > (11 - 1) * 2^4 = 160.
MS_SSIM_MIN_SIDE = (_MS_WIN - 1) * 2 ** (len(_MS_WEIGHTS) - 1)


def ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """skimage structural_similarity(x, y, data_range=255): 7x7 uniform window, N-1 covariance."""
    x64 = as_grey_float64(x, "X")
    y64 = as_grey_float64(y, "Y")
    if x64.shape != y64.shape:
        raise ValueError(f"shape mismatch {x64.shape} vs {y64.shape}")
    if min(x64.shape) < _SSIM_WIN:
        raise ValueError(f"SSIM needs both sides >= {_SSIM_WIN}, got {x64.shape}")
    # skimage pads with 'reflect' then crops a 3-pixel border, so only 'valid' windows remain.
    ux = box_mean_valid(x64, _SSIM_WIN)
    uy = box_mean_valid(y64, _SSIM_WIN)
    uxx = box_mean_valid(x64 * x64, _SSIM_WIN)
    uyy = box_mean_valid(y64 * y64, _SSIM_WIN)
    uxy = box_mean_valid(x64 * y64, _SSIM_WIN)
    n = _SSIM_WIN * _SSIM_WIN
    cov_norm = n / (n - 1.0)  # sample covariance (skimage use_sample_covariance=True)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    num = (2 * ux * uy + _C1) * (2 * vxy + _C2)
    den = (ux**2 + uy**2 + _C1) * (vx + vy + _C2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SSIM = ssim(F, A) + ssim(F, B) (a sum, CDDFuse; half of it is the Tang/VIFB mean)."""
    a64, b64, f64 = check_triplet(a, b, f)
    return ssim_pair(f64, a64) + ssim_pair(f64, b64)


# pytorch-msssim's ``_fspecial_gauss_1d(11, 1.5)``: exp and normalisation are done in float32 by
# torch, then cast to float64. The exact float32 values are pinned here because the result is
# sensitive to them: NumPy's float32 exp differs by 1 ulp on two taps, and the window sum error
# that follows moves MS-SSIM by up to 2e-5 relative (README tolerance is 1e-5).
_MS_WINDOW_HEX = (
    "0x1.0d957p-10",
    "0x1.f1fe02p-8",
    "0x1.26eb18p-5",
    "0x1.bff0fep-4",
    "0x1.b43c3ep-3",
    "0x1.10656p-2",
    "0x1.b43c3ep-3",
    "0x1.bff0fep-4",
    "0x1.26eb18p-5",
    "0x1.f1fe02p-8",
    "0x1.0d957p-10",
)


def msssim_window_1d() -> np.ndarray:
    """pytorch-msssim's 11-tap Gaussian (sigma 1.5) with its exact float32 tap values, as float64."""
    return np.array([float.fromhex(h) for h in _MS_WINDOW_HEX], dtype=np.float64)


def _avg_pool_2x2(x: np.ndarray) -> np.ndarray:
    """torch avg_pool2d(kernel 2, stride 2, padding=(H%2, W%2)), zero padding counted in the mean."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    p = np.pad(x, ((ph, ph), (pw, pw)), mode="constant")
    oh = (p.shape[0] - 2) // 2 + 1
    ow = (p.shape[1] - 2) // 2 + 1
    p = p[: 2 * oh, : 2 * ow]
    return (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) / 4


def _ssim_cs(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term over the 'valid' Gaussian-filtered region."""
    mu1 = correlate_valid_separable(x, k)
    mu2 = correlate_valid_separable(y, k)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = correlate_valid_separable(x * x, k) - mu1_sq
    s2 = correlate_valid_separable(y * y, k) - mu2_sq
    s12 = correlate_valid_separable(x * y, k) - mu12
    cs_map = (2 * s12 + _C2) / (s1 + s2 + _C2)
    ssim_map = ((2 * mu12 + _C1) / (mu1_sq + mu2_sq + _C1)) * cs_map
    return float(np.mean(ssim_map)), float(np.mean(cs_map))


def ms_ssim_pair(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """pytorch_msssim.ms_ssim(x, y, data_range=255); None when min(H, W) <= 160."""
    x64 = as_grey_float64(x, "X")
    y64 = as_grey_float64(y, "Y")
    if x64.shape != y64.shape:
        raise ValueError(f"shape mismatch {x64.shape} vs {y64.shape}")
    if min(x64.shape) <= MS_SSIM_MIN_SIDE:
        return None  # README: not available below Wang's size limit
    k = msssim_window_1d()
    levels = len(_MS_WEIGHTS)
    vals = np.empty(levels)
    for lvl in range(levels):
        s, cs = _ssim_cs(x64, y64, k)
        if lvl < levels - 1:
            vals[lvl] = max(cs, 0.0)  # relu(cs)
            x64, y64 = _avg_pool_2x2(x64), _avg_pool_2x2(y64)
        else:
            vals[lvl] = max(s, 0.0)  # relu(ssim) at the coarsest level
    return float(np.prod(vals**_MS_WEIGHTS))


def ms_ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> Optional[float]:
    """MS-SSIM = (ms_ssim(A, F) + ms_ssim(B, F)) / 2, or None when min(H, W) <= 160."""
    a64, b64, f64 = check_triplet(a, b, f)
    va = ms_ssim_pair(a64, f64)
    vb = ms_ssim_pair(b64, f64)
    if va is None or vb is None:
        return None
    return (va + vb) / 2

"""VIF: Sheikh-Bovik pixel-domain multiscale VIF (vifp_mscale), README section 3 "VIF".

Convention: inputs are 2-D grey-level arrays 0..255, computed in float64. The Gaussian windows
are separable, so each 'valid' correlation is done with two 1-D passes (~1e-15 relative to
CDDFuse's direct ``convolve2d``; README 4 allows 1e-6).
"""

from __future__ import annotations

import numpy as np

from ._filters import correlate_valid_separable
from .grey import as_grey_float64, check_triplet

__all__ = ["vif", "vifp", "vif_window_1d"]

_SIGMA_NSQ = 2.0
_EPS = 1e-10
_N_SCALES = 4


def vif_window_1d(scale: int) -> np.ndarray:
    """1-D factor of the N x N Gaussian window of a scale: N = 2^(5-s)+1, sigma = N/5, sum 1."""
    n = 2 ** (5 - scale) + 1
    sd = n / 5.0
    r = (n - 1) / 2.0
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2.0 * sd * sd))
    # README step 1 zeroes entries below eps*max of the 2-D window; the smallest 2-D entry is
    # g[0]^2 / g[r]^2 >= exp(-5.6) for every N used here, so nothing is zeroed in practice.
    w2 = np.outer(g, g)
    if np.any(w2 < np.finfo(np.float64).eps * w2.max()):
        raise AssertionError("VIF window would need eps-zeroing; not separable")
    return g / g.sum()


def _local_stats(
    refs: list[np.ndarray], dist: np.ndarray, k: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Local variances of each ref, of dist, and ref-dist covariances (README VIF step 3)."""
    mu2 = correlate_valid_separable(dist, k)
    sigma2_sq = correlate_valid_separable(dist * dist, k) - mu2 * mu2
    sigma2_sq[sigma2_sq < 0] = 0
    sig1, sig12 = [], []
    for ref in refs:
        mu1 = correlate_valid_separable(ref, k)
        s1 = correlate_valid_separable(ref * ref, k) - mu1 * mu1
        s1[s1 < 0] = 0
        sig1.append(s1)
        sig12.append(correlate_valid_separable(ref * dist, k) - mu1 * mu2)
    return sig1, sigma2_sq, sig12


def _scale_terms(s1: np.ndarray, s2: np.ndarray, s12: np.ndarray) -> tuple[float, float]:
    """Numerator and denominator sums of one scale (README VIF steps 4-6, corrections in order)."""
    g = s12 / (s1 + _EPS)
    sv = s2 - g * s12
    low1 = s1 < _EPS
    g[low1] = 0
    sv[low1] = s2[low1]
    s1 = np.where(low1, 0.0, s1)
    low2 = s2 < _EPS
    g[low2] = 0
    sv[low2] = 0
    neg = g < 0
    sv[neg] = s2[neg]
    g[neg] = 0
    sv[sv <= _EPS] = _EPS
    num = float(np.sum(np.log10(1 + g * g * s1 / (sv + _SIGMA_NSQ))))
    den = float(np.sum(np.log10(1 + s1 / _SIGMA_NSQ)))
    return num, den


def _vifp_many(refs: list[np.ndarray], dist: np.ndarray) -> list[float]:
    """vifp(ref, dist) for several references sharing one distorted image F."""
    refs = list(refs)
    num = [0.0] * len(refs)
    den = [0.0] * len(refs)
    for scale in range(1, _N_SCALES + 1):
        k = vif_window_1d(scale)
        if scale > 1:
            # README VIF step 2: filter ('valid') then keep every second row and column.
            refs = [correlate_valid_separable(r, k)[::2, ::2] for r in refs]
            dist = correlate_valid_separable(dist, k)[::2, ::2]
        sig1, s2, sig12 = _local_stats(refs, dist, k)
        for i, (s1, s12) in enumerate(zip(sig1, sig12)):
            n_i, d_i = _scale_terms(s1, s2, s12)
            num[i] += n_i
            den[i] += d_i
    out = []
    for n_i, d_i in zip(num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.float64(n_i) / np.float64(d_i)
        out.append(1.0 if np.isnan(v) else float(v))  # README: NaN gives 1
    return out


def vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    """Single-reference multiscale pixel VIF of ``dist`` against ``ref``."""
    r = as_grey_float64(ref, "reference")
    d = as_grey_float64(dist, "distorted")
    if r.shape != d.shape:
        raise ValueError(f"shape mismatch {r.shape} vs {d.shape}")
    return _vifp_many([r], d)[0]


def vif(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIF = vifp(A, F) + vifp(B, F) (a sum, as in CDDFuse)."""
    a64, b64, f64 = check_triplet(a, b, f)
    va, vb = _vifp_many([a64, b64], f64)
    return va + vb

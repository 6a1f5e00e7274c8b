"""Histogram and moment metrics: EN, SD, SF, AG, MSE/PSNR, CC, SCD, MI (README section 3).

Convention: inputs are 2-D arrays of grey levels 0..255 of any numeric dtype; everything is
computed in float64, following CDDFuse's ``utils/Evaluator.py`` formulas.
"""

from __future__ import annotations

import math

import numpy as np

from .grey import as_grey_float64, check_triplet

__all__ = [
    "entropy",
    "standard_deviation",
    "spatial_frequency",
    "average_gradient",
    "mse",
    "psnr",
    "pearson",
    "correlation_coefficient",
    "scd",
    "mutual_information_pair",
    "mutual_information",
]


def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy (bits) of the 256-bin histogram of round(F); empty bins skipped."""
    x = as_grey_float64(f, "F")
    # README: h = bincount(uint8(round(F)))/N; clipping only guards out-of-range input.
    levels = np.clip(np.round(x), 0, 255).astype(np.uint8).ravel()
    h = np.bincount(levels, minlength=256) / levels.size
    h = h[h > 0]
    return float(-np.sum(h * np.log2(h)))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation of F (grey levels)."""
    return float(np.std(as_grey_float64(f, "F")))


def spatial_frequency(f: np.ndarray) -> float:
    """SF: sqrt of mean squared horizontal plus mean squared vertical first differences."""
    x = as_grey_float64(f, "F")
    # README: each mean is over its own difference array, not over H*W.
    rf = np.mean((x[:, 1:] - x[:, :-1]) ** 2)
    cf = np.mean((x[1:, :] - x[:-1, :]) ** 2)
    return float(np.sqrt(rf + cf))


def _axis_gradient(x: np.ndarray, axis: int) -> np.ndarray:
    """Central difference inside, forward/backward difference at the first/last index."""
    g = np.empty_like(x)
    xs = np.moveaxis(x, axis, 0)
    gs = np.moveaxis(g, axis, 0)
    gs[0] = xs[1] - xs[0]
    gs[-1] = xs[-1] - xs[-2]
    gs[1:-1] = (xs[2:] - xs[:-2]) / 2
    return g


def average_gradient(f: np.ndarray) -> float:
    """AG: mean over all H*W pixels of sqrt((Gx^2 + Gy^2) / 2) (CDDFuse convention)."""
    x = as_grey_float64(f, "F")
    if min(x.shape) < 2:
        raise ValueError("AG needs an image of at least 2x2 pixels")
    gx = _axis_gradient(x, 1)
    gy = _axis_gradient(x, 0)
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def mse(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MSE used by PSNR: mean of the two sources' mean squared errors against F."""
    a64, b64, f64 = check_triplet(a, b, f)
    return float((np.mean((a64 - f64) ** 2) + np.mean((b64 - f64) ** 2)) / 2)


def psnr(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """PSNR (dB) = 10 log10(max(F)^2 / MSE); the peak is max(F), not 255 (CDDFuse)."""
    err = mse(a, b, f)
    peak = float(np.max(as_grey_float64(f, "F")))
    if err == 0.0:
        return math.inf
    return float(10 * np.log10(peak**2 / err))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over all pixels, in the exact form CDDFuse evaluates it."""
    xc = x - np.mean(x)
    yc = y - np.mean(y)
    return float(np.sum(xc * yc) / np.sqrt(np.sum(xc**2) * np.sum(yc**2)))


def correlation_coefficient(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """CC: mean of r(A, F) and r(B, F)."""
    a64, b64, f64 = check_triplet(a, b, f)
    return (pearson(a64, f64) + pearson(b64, f64)) / 2


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD: sum of correlations of differences, r(F - B, A) + r(F - A, B)."""
    a64, b64, f64 = check_triplet(a, b, f)
    return pearson(a64, f64 - b64) + pearson(b64, f64 - a64)


def _label_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Map grey values to dense integer labels (fast path for integral 0..255 values)."""
    flat = x.ravel()
    ints = flat.astype(np.int64)
    if ints.min(initial=0) >= 0 and ints.max(initial=0) <= 255 and np.array_equal(ints, flat):
        return ints, 256
    # Non-integral values: every distinct value is its own label, as in sklearn.
    _, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.ravel()
    return inverse.astype(np.int64), int(inverse.max()) + 1


def mutual_information_pair(x: np.ndarray, f: np.ndarray) -> float:
    """MI(X, F) in nats from the joint histogram of values (sklearn mutual_info_score)."""
    x64 = as_grey_float64(x, "X")
    f64 = as_grey_float64(f, "F")
    cf, nf = _label_codes(f64)
    cx, nx = _label_codes(x64)
    joint = np.bincount(cf * nx + cx, minlength=nf * nx).reshape(nf, nx)
    pi = joint.sum(axis=1)
    pj = joint.sum(axis=0)
    if np.count_nonzero(pi) == 1 or np.count_nonzero(pj) == 1:
        return 0.0  # sklearn: a single label on either side gives 0
    rows, cols = np.nonzero(joint)
    nz = joint[rows, cols].astype(np.float64)
    total = nz.sum()
    # Same algebra as sklearn.metrics.mutual_info_score (counts, not probabilities, in the logs).
    p_nm = nz / total
    outer = pi[rows].astype(np.int64) * pj[cols].astype(np.int64)
    log_outer = -np.log(outer.astype(np.float64)) + math.log(pi.sum()) + math.log(pj.sum())
    terms = p_nm * (np.log(nz) - math.log(total)) + p_nm * log_outer
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return float(max(terms.sum(), 0.0))


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MI: MI(A, F) + MI(B, F) in nats (a sum, natural log)."""
    a64, b64, f64 = check_triplet(a, b, f)
    return mutual_information_pair(a64, f64) + mutual_information_pair(b64, f64)

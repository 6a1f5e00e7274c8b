"""Visible-defect figures of a fused image against its two sources: clip, grain, grid.

They reproduce ``shared/tools/artefacts.py`` (the reference of issue 15) on our grey conventions:
A, B and F are 2-D grey levels 0..255 of any numeric dtype, computed in float64 (colour files are
reduced by ``load_grey``'s integer BT.601 luma, as the reference does).

- ``clip``: share of pixels that F puts at 255 where both sources are below 240, or at 0 where
  either source is above 16 (blown highlights, crushed shadows). Ideal 0.
- ``grain``: Immerkaer's fine-noise sigma of F over the larger of the sources' (at least 1e-6).
  A fusion that adds no grain stays near 1.
- ``grid``: periodic texture. For each period p in 2, 4, 8, 16 px, the power of F's high-pass
  (F - Gaussian blur, sigma 3) at the frequencies of that period over the mean power of their
  spectral neighbourhood (+-3 bins); the largest over p, divided by the same figure of the sources
  (at least 1). Ideal: at most about 1; classical fusions stay below 2.5.

Unlike the quality metrics, none of them is "higher is better"; issue 15 judges them per task by
their median and max over a split.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from ._filters import correlate_valid_separable
from .grey import as_grey_float64, check_triplet

__all__ = [
    "DEFECT_KEYS",
    "clip_fraction",
    "grain_sigma",
    "grain_ratio",
    "periodic_peak",
    "grid_ratio",
    "defect_figures",
]

DEFECT_KEYS: tuple[str, ...] = ("clip", "grain", "grid")

# Immerkaer's mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is the outer product of [1,-2,1] with itself.
_LAPLACIAN_DIFF_1D = np.array([1.0, -2.0, 1.0])
_PERIODS = (2, 4, 8, 16)
_NEIGHBOUR_OFFSETS = ((-3, -3), (-3, 3), (3, -3), (3, 3))  # the reference's (dy, dx) order
_HIGHPASS_SIGMA = 3.0


def clip_fraction(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Share of pixels F clips that the sources do not: F >= 255 where max(A, B) < 240, or F <= 0
    where max(A, B) > 16. 0 is ideal."""
    a64, b64, f64 = check_triplet(a, b, f)
    top = np.maximum(a64, b64)
    return float(np.mean(((f64 >= 255) & (top < 240)) | ((f64 <= 0) & (top > 16))))


def grain_sigma(x: np.ndarray) -> Optional[float]:
    """Immerkaer's noise sigma: sqrt(pi/2) / (6 (W-2)(H-2)) times the sum of |x * mask| over the
    pixels whose 3x3 window lies inside the image. None below 3x3 px."""
    img = as_grey_float64(x, "image")
    h, w = img.shape
    if h < 3 or w < 3:
        return None
    response = np.abs(correlate_valid_separable(img, _LAPLACIAN_DIFF_1D))
    return float(math.sqrt(math.pi / 2) * response.sum() / (6.0 * (w - 2) * (h - 2)))


def grain_ratio(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> Optional[float]:
    """grain_sigma(F) / max(grain_sigma(A), grain_sigma(B), 1e-6); about 1 when F adds no grain.
    None below 3x3 px."""
    a64, b64, f64 = check_triplet(a, b, f)
    sf = grain_sigma(f64)
    if sf is None:
        return None
    return sf / max(grain_sigma(a64), grain_sigma(b64), 1e-6)


def _period_bins(h: int, w: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per period: (rows, cols) of its peak bins and of their +-3 neighbourhoods (reference order)."""
    peaks, around = [], []
    for p in _PERIODS:
        fy, fx = h // p, w // p
        if p == 2:
            pts = [(0, w // 2), (h // 2, 0), (h // 2, w // 2)]
        else:
            pts = [(0, fx), (fy, 0), (fy, fx), (fy, w - fx)]
        ys = np.array([y for y, _ in pts])
        xs = np.array([x for _, x in pts])
        peaks.append((ys % h, xs % w))
        around.append(
            (
                np.array([(y + dy) % h for y, _ in pts for dy, _ in _NEIGHBOUR_OFFSETS]),
                np.array([(x + dx) % w for _, x in pts for _, dx in _NEIGHBOUR_OFFSETS]),
            )
        )
    return peaks, around


def periodic_peak(x: np.ndarray) -> float:
    """Largest over p in 2, 4, 8, 16 of the high-pass power at period p's bins over their mean
    neighbourhood power (times the number of bins; at least 1e-12)."""
    img = np.ascontiguousarray(as_grey_float64(x, "image"))
    highpass = img - cv2.GaussianBlur(img, (0, 0), _HIGHPASS_SIGMA)
    power = np.abs(np.fft.fft2(highpass)) ** 2
    h, w = power.shape
    peaks, around = _period_bins(h, w)
    best = 0.0
    for (py, px), (ny, nx) in zip(peaks, around):
        peak = float(np.sum(power[py, px]))
        best = max(best, peak / max(float(np.mean(power[ny, nx])) * py.size, 1e-12))
    return float(best)


def grid_ratio(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """periodic_peak(F) / max(periodic_peak(A), periodic_peak(B), 1): how much more periodic
    texture F has than the sources."""
    a64, b64, f64 = check_triplet(a, b, f)
    return periodic_peak(f64) / max(periodic_peak(a64), periodic_peak(b64), 1.0)


def defect_figures(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, Optional[float]]:
    """The three figures {"clip", "grain", "grid"} of fused F against sources A and B."""
    a64, b64, f64 = check_triplet(a, b, f)
    return {"clip": clip_fraction(a64, b64, f64), "grain": grain_ratio(a64, b64, f64), "grid": grid_ratio(a64, b64, f64)}

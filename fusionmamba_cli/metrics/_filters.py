"""Separable 'valid' correlation helpers shared by VIF, SSIM and MS-SSIM.

Inputs are float64 grey-level arrays (0..255). OpenCV's ``sepFilter2D`` in CV_64F is double
precision throughout, and matches a direct 2-D correlation to ~1e-15 relative.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["correlate_valid_separable", "box_mean_valid"]


def correlate_valid_separable(x: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Correlate ``x`` with outer(k, k) keeping only the 'valid' part (MATLAB filter2 'valid')."""
    k = np.ascontiguousarray(kernel_1d, dtype=np.float64).ravel()
    n = k.size
    h, w = x.shape
    if h < n or w < n:
        return np.empty((max(h - n + 1, 0), max(w - n + 1, 0)), dtype=np.float64)
    r = n // 2
    src = np.ascontiguousarray(x, dtype=np.float64)
    # anchor at the centre of an odd kernel; the border values are cropped away below.
    out = cv2.sepFilter2D(src, cv2.CV_64F, k, k, anchor=(r, r), borderType=cv2.BORDER_CONSTANT)
    return out[r : h - (n - 1 - r), r : w - (n - 1 - r)]


def box_mean_valid(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over every size x size window fully inside ``x`` (uniform filter, 'valid' part)."""
    return correlate_valid_separable(x, np.full(size, 1.0 / size))

"""Qabf: Xydeas-Petrovic Q^AB/F edge-preservation metric (README section 3 "Qabf").

Convention: inputs are 2-D grey-level arrays 0..255, computed in float64, reproducing CDDFuse's
``Qabf`` (scipy ``convolve2d(..., 'same')`` Sobel, i.e. true convolution with zero padding).
"""

from __future__ import annotations

import math

import numpy as np

from .grey import check_triplet

__all__ = ["qabf", "sobel_conv_same"]

_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def sobel_conv_same(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sx = conv2(X, [[-1,0,1],[-2,0,2],[-1,0,1]], 'same'), Sy = conv2(X, [[1,2,1],[0,0,0],[-1,-2,-1]], 'same')."""
    p = np.pad(x, 1, mode="constant")
    h, w = x.shape
    # Convolution flips the kernel: Sx(r,c) = left column weights minus right column weights.
    left = p[0:h, 0:w] + 2 * p[1 : h + 1, 0:w] + p[2 : h + 2, 0:w]
    right = p[0:h, 2 : w + 2] + 2 * p[1 : h + 1, 2 : w + 2] + p[2 : h + 2, 2 : w + 2]
    top = p[0:h, 0:w] + 2 * p[0:h, 1 : w + 1] + p[0:h, 2 : w + 2]
    bottom = p[2 : h + 2, 0:w] + 2 * p[2 : h + 2, 1 : w + 1] + p[2 : h + 2, 2 : w + 2]
    return left - right, bottom - top


def _strength_and_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient strength g = |S| and angle alpha = atan(Sy/Sx), with alpha = pi/2 where Sx == 0."""
    sx, sy = sobel_conv_same(x)
    g = np.sqrt(sx * sx + sy * sy)
    alpha = np.full_like(x, math.pi / 2)
    nz = sx != 0
    alpha[nz] = np.arctan(sy[nz] / sx[nz])
    return g, alpha


def _preservation(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Per-pixel Q_XF = Q_g * Q_alpha of source X in F."""
    ratio = np.empty_like(g_x)
    gt = g_x > g_f
    lt = g_x < g_f
    eq = g_x == g_f
    ratio[gt] = g_f[gt] / g_x[gt]
    ratio[lt] = g_x[lt] / g_f[lt]
    # README Qabf: reference quirk, G_XF = gF where gX == gF (so 0 when both are 0, not 1).
    ratio[eq] = g_f[eq]
    a_xf = 1 - np.abs(a_x - a_f) / (math.pi / 2)
    q_g = _TG / (1 + np.exp(_KG * (ratio - _DG)))
    q_a = _TA / (1 + np.exp(_KA * (a_xf - _DA)))
    return q_g * q_a


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB)."""
    a64, b64, f64 = check_triplet(a, b, f)
    g_a, al_a = _strength_and_angle(a64)
    g_b, al_b = _strength_and_angle(b64)
    g_f, al_f = _strength_and_angle(f64)
    q_af = _preservation(g_a, al_a, g_f, al_f)
    q_bf = _preservation(g_b, al_b, g_f, al_f)
    return float(np.sum(q_af * g_a + q_bf * g_b) / np.sum(g_a + g_b))

"""BT.601 full-range YCbCr (the JPEG convention), channel order (Y, Cb, Cr), values in [0, 1].

OpenCV's COLOR_RGB2YCrCb uses the same coefficients but the order (Y, Cr, Cb); the authors'
YtoRGB.py uses YUV coefficients. Chroma is centred on 0.5.
"""

from __future__ import annotations

import numpy as np

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W, 3) YCbCr in [0, 1]."""
    ycbcr = rgb.astype(np.float32) @ _RGB_TO_YCBCR.T.astype(np.float32)
    ycbcr[..., 1:] += 0.5
    return ycbcr


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """(H, W, 3) YCbCr in [0, 1] -> (H, W, 3) RGB, not clipped."""
    centred = ycbcr.astype(np.float32).copy()
    centred[..., 1:] -= 0.5
    return centred @ _YCBCR_TO_RGB.T.astype(np.float32)


def ycbcr_to_rgb_in_gamut(ycbcr: np.ndarray) -> np.ndarray:
    """(H, W, 3) YCbCr -> RGB in [0, 1] with the luma kept: where Y plus the chroma leaves the RGB cube,
    the chroma is scaled towards grey just enough to fit (per pixel) instead of clipping the channels.

    Clipping changes a pixel's luma (a fused Y of 0.9 with PET's saturated red gives R > 1, and the
    clipped file is darker than the fusion); the chroma adds nothing to Y (BT.601 is linear), so
    scaling it by s in [0, 1] keeps Y exactly: RGB = Y + s * d with d the chroma's RGB offset."""
    y = np.clip(ycbcr[..., :1].astype(np.float32), 0.0, 1.0)
    centred = ycbcr[..., 1:].astype(np.float32) - 0.5
    offset = centred @ _YCBCR_TO_RGB[:, 1:].T.astype(np.float32)  # (H, W, 3): RGB minus Y
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offset > 0, (1.0 - y) / offset, np.where(offset < 0, -y / offset, np.inf))
    scale = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return np.clip(y + scale * offset, 0.0, 1.0)


def has_chroma(pixels: np.ndarray, min_share: float = 0.001) -> bool:
    """Whether an image shows colour: RGB whose channels differ by more than 2 grey levels (of 255) on
    at least `min_share` of its pixels. An RGB file holding a grey image (R = G = B) has none."""
    if pixels.ndim != 3:
        return False
    step = max(1, int((pixels.shape[0] * pixels.shape[1] / 1e6) ** 0.5))  # a ~1 Mpx sample is plenty
    sample = pixels[::step, ::step]
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.mean(spread > 2 / 255)) >= min_share

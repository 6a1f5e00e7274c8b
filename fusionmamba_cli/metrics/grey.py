"""Colour reduction and input conversion (README section 1, "Inputs").

Convention: every metric works on float64 grey levels in 0..255 (the 8-bit values, neither
divided by 255 nor min-max normalised). Colour images become their BT.601 luma Y computed with
exact integer arithmetic, ``(299R + 587G + 114B + 500) // 1000``.
"""

from __future__ import annotations

from os import PathLike
from typing import Union

import numpy as np
from PIL import Image

__all__ = ["to_grey_uint8", "load_grey", "as_grey_float64", "check_triplet"]

# Pillow modes that hold 8-bit grey values directly ("grey files are used as stored").
_GREY_MODES = {"L": "L", "1": "L", "LA": "L"}
# Modes that cannot be represented as 8-bit grey without a rescaling decision.
_UNSUPPORTED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_grey_uint8(rgb: np.ndarray) -> np.ndarray:
    """Reduce a uint8 HxWx3 RGB array to its BT.601 luma Y (uint8), rounded half up exactly."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got dtype {rgb.dtype}")
    c = rgb.astype(np.int32)
    # README 1: Y = (299R + 587G + 114B + 500) // 1000, not PIL's truncating YCbCr.
    y = (299 * c[..., 0] + 587 * c[..., 1] + 114 * c[..., 2] + 500) // 1000
    return y.astype(np.uint8)


def load_grey(path: Union[str, PathLike]) -> np.ndarray:
    """Read an image file as uint8 HxW grey levels: grey as stored, colour via exact BT.601 Y."""
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in _UNSUPPORTED_MODES:
            raise ValueError(f"{path}: unsupported image mode {mode!r} (need 8-bit grey or colour)")
        if mode in _GREY_MODES:
            return np.asarray(im.convert(_GREY_MODES[mode]), dtype=np.uint8).copy()
        # RGB as is; palette, RGBA, CMYK, YCbCr, ... are expanded to RGB first.
        rgb = im if mode == "RGB" else im.convert("RGB")
        return to_grey_uint8(np.asarray(rgb, dtype=np.uint8))


def as_grey_float64(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Return a 2-D float64 view/copy of ``img`` (grey levels 0..255), validating its shape."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D grey image, got shape {arr.shape}")
    return arr


def check_triplet(
    a: np.ndarray, b: np.ndarray, f: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert A, B, F to float64 2-D arrays and check they share one shape (README 1, Sizes)."""
    a64 = as_grey_float64(a, "A")
    b64 = as_grey_float64(b, "B")
    f64 = as_grey_float64(f, "F")
    if not (a64.shape == b64.shape == f64.shape):
        raise ValueError(f"A, B and F must have the same shape, got {a64.shape}, {b64.shape}, {f64.shape}")
    return a64, b64, f64

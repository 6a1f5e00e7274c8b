"""Read and write images for fusion. Pixels leave here as float32 in [0, 1], (H, W) grey or
(H, W, 3) RGB, with their bit depth remembered so 16-bit in gives 16-bit out.

Writes are atomic: encode in memory, write a temp file beside the target, rename.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fusionmamba_cli.errors import ImageReadError, ImageWriteError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp")


@dataclass
class LoadedImage:
    """Pixels as float32 in [0, 1]: (H, W) grey or (H, W, 3) RGB; `bit_depth` 8 or 16."""

    pixels: np.ndarray
    bit_depth: int = 8
    notes: list[str] = field(default_factory=list)

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def _decode_16bit_colour(path: Path) -> np.ndarray | None:
    """OpenCV decode for 16-bit colour PNG/TIFF, which Pillow reduces to 8 bits; RGB order."""
    data = np.fromfile(path, dtype=np.uint8)  # works for non-UTF-8 / non-ASCII names too
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        return None
    return cv2.cvtColor(decoded[..., :3], cv2.COLOR_BGR2RGB)


def _pixels_from_pil(image: Image.Image, path: Path, notes: list[str]) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0, 16
    if mode == "I":
        values = np.asarray(image, dtype=np.int64)
        bits = 16 if values.max(initial=0) > 255 else 8
        return np.clip(values, 0, 2**bits - 1).astype(np.float32) / (2**bits - 1), bits
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageReadError(f"{path}: float image holds NaN or infinite values")
        lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            notes.append(f"float image with range [{lo:.3g}, {hi:.3g}] clipped to [0, 1]")
        return np.clip(values, 0.0, 1.0), 16
    if mode in ("1", "L", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGB", "RGBX", "La"):
        if mode in ("RGBA", "LA", "PA", "La") or (mode == "P" and "transparency" in image.info):
            notes.append("alpha channel dropped")
        if mode in ("1", "L", "LA", "La"):
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 8
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        if mode == "P" and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., 0], 8  # a grey palette is a grey image
        return rgb, 8
    raise ImageReadError(f"{path}: unsupported image mode {mode}")


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode an image file (PNG, JPEG, BMP, TIFF; grey, RGB, RGBA, palette; 8/16-bit; EXIF-rotated)."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if getattr(image, "n_frames", 1) > 1:
                    notes.append(f"{image.n_frames} frames: using the first")
                image.seek(0)
                image = ImageOps.exif_transpose(image)
                image.load()
                fmt = (image.format or "").upper()
                pixels, bits = _pixels_from_pil(image, path, notes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{path}: image too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({str(exc).strip() or exc.__class__.__name__})") from None
    if pixels.ndim == 3 and fmt in ("PNG", "TIFF") and path.suffix.lower() in (".png", ".tif", ".tiff"):
        deep = _decode_16bit_colour(path)
        if deep is not None and deep.shape[:2] == pixels.shape[:2]:
            pixels, bits = deep.astype(np.float32) / 65535.0, 16
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"{path}: image has zero size")
    return LoadedImage(np.ascontiguousarray(pixels, dtype=np.float32), bits, notes)


def to_integer(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats to uint8/uint16 with rounding (values are clipped first)."""
    top = 65535 if bit_depth == 16 else 255
    scaled = np.rint(np.clip(pixels, 0.0, 1.0) * top)
    return scaled.astype(np.uint16 if bit_depth == 16 else np.uint8)


def encode_image(pixels: np.ndarray, suffix: str, bit_depth: int = 8) -> bytes:
    """Encode [0, 1] pixels for a file suffix; JPEG and BMP are 8-bit only."""
    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageWriteError(f"unsupported output format {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    depth = 8 if suffix in _EIGHT_BIT_ONLY else bit_depth
    values = to_integer(pixels, depth)
    if values.ndim == 3:
        values = cv2.cvtColor(values, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(suffix, values, params)
    if not ok:
        raise ImageWriteError(f"could not encode a {suffix} image")
    return buffer.tobytes()


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` via a temp file in the same folder and a rename: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image(path: str | os.PathLike, pixels: np.ndarray, bit_depth: int = 8) -> Path:
    """Atomically write (H, W) or (H, W, 3) [0, 1] pixels; format from the suffix."""
    path = Path(path)
    payload = encode_image(pixels, path.suffix, bit_depth)
    try:
        write_bytes_atomic(path, payload)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path

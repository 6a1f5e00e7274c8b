"""Read and write images for fusion. Pixels leave here as float32 in [0, 1], (H, W) grey or
(H, W, 3) RGB, with their bit depth remembered so 16-bit in gives 16-bit out.

Writes are atomic: encode in memory, then `atomic.write_bytes_atomic` (a temp file beside the target, renamed).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# OpenCV's own decompression-bomb limit (read once, on its first decode): Pillow's hard limit.
os.environ.setdefault("CV_IO_MAX_IMAGE_PIXELS", str(2 * 89_478_485))

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fusionmamba_cli.atomic import write_bytes_atomic
from fusionmamba_cli.errors import ImageReadError, ImageWriteError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what we read and write
INPUT_SUFFIXES = IMAGE_SUFFIXES + (".gif", ".webp")  # also read (first frame of an animation)
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


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_ORIENTATION = 0x0112


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W[, C]) array, as `ImageOps.exif_transpose` does."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),  # transpose
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
        8: lambda a: np.rot90(a, 1),
    }
    return transforms[orientation](pixels) if orientation in transforms else pixels


def _check_file(path: Path) -> None:
    """One-line reasons for paths that are not readable, non-empty regular files."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: {'broken symbolic link' if path.is_symlink() else 'no such file'}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(f"{path}: symbolic link loop") from None
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(f"{path}: not a regular file")  # FIFOs and devices would block or never end
    if info.st_size == 0:
        raise ImageReadError(f"{path}: empty file")


def _pixels_from_array(decoded: np.ndarray, path: Path, notes: list[str]) -> tuple[np.ndarray, int]:
    """OpenCV-decoded (BGR[A]) uint8 / uint16 / float arrays -> [0, 1] float32 RGB or grey, bit depth."""
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    if decoded.ndim == 3:
        if decoded.shape[2] == 4:
            notes.append("alpha channel dropped")
        if decoded.shape[2] not in (3, 4):
            raise ImageReadError(f"{path}: unsupported image with {decoded.shape[2]} channels")
        decoded = np.ascontiguousarray(decoded[..., 2::-1])  # BGR -> RGB
    if decoded.dtype == np.uint8:
        return decoded.astype(np.float32) / 255.0, 8
    if decoded.dtype == np.uint16:
        return decoded.astype(np.float32) / 65535.0, 16
    if decoded.dtype.kind == "f":
        values = decoded.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageReadError(f"{path}: float image holds NaN or infinite values")
        lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            notes.append(f"float image with range [{lo:.3g}, {hi:.3g}] clipped to [0, 1]")
        return np.clip(values, 0.0, 1.0), 16
    raise ImageReadError(f"{path}: unsupported pixel type {decoded.dtype}")


def _decode_opencv(data: bytes) -> np.ndarray | None:
    """OpenCV decode of in-memory file bytes (no EXIF rotation); None when it cannot."""
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    return decoded if decoded is not None and decoded.size else None


def _pixels_from_pil(image: Image.Image, path: Path, notes: list[str]) -> tuple[np.ndarray, int]:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0, 16
    if mode == "I":
        values = np.asarray(image, dtype=np.int64)
        bits = 16 if values.max(initial=0) > 255 else 8
        return np.clip(values, 0, 2**bits - 1).astype(np.float32) / (2**bits - 1), bits
    if mode == "F":
        return _pixels_from_array(np.asarray(image, dtype=np.float32), path, notes)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        notes.append("alpha channel dropped")
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 8
    try:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (ValueError, OSError):
        raise ImageReadError(f"{path}: unsupported image mode {mode}") from None
    if mode == "P" and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0], 8  # a grey palette is a grey image
    return rgb, 8


def _png_declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, to name a zero-size image that decoders just reject."""
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode an image file (PNG, JPEG, BMP, TIFF; grey, RGB, RGBA, palette, CMYK; 8/16-bit and
    float; first frame of multi-frame files; EXIF orientation applied).

    Every failure is an `ImageReadError` whose message starts with the path and says why: missing,
    a directory, a symbolic link loop, empty, not an image, truncated, zero-size, too large to decode
    safely (Pillow's decompression-bomb limit, also applied to OpenCV), NaN/inf floats.
    """
    path = Path(path)
    _check_file(path)
    notes: list[str] = []
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; one open for Pillow and OpenCV
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        head = handle.read(32)
        declared = _png_declared_size(head)
        if declared is not None and 0 in declared:
            raise ImageReadError(f"{path}: image has zero size ({declared[0]}x{declared[1]})")
        handle.seek(0)
        pixels = None
        try:
            with warnings.catch_warnings():
                # decoder chatter must not reach the terminal; Pillow's bomb *warning* (above 89 Mpx)
                # too: the limit is its hard error, 2 x Image.MAX_IMAGE_PIXELS (179 Mpx by default)
                warnings.simplefilter("ignore")
                with Image.open(handle) as image:
                    fmt = (image.format or "").upper()  # before exif_transpose, which returns a copy
                    frames = getattr(image, "n_frames", 1)
                    if frames > 1:
                        notes.append(f"{frames} frames: using the first")
                    image.seek(0)
                    orientation = image.getexif().get(_ORIENTATION, 1)
                    image = ImageOps.exif_transpose(image)
                    image.load()
                    pixels, bits = _pixels_from_pil(image, path, notes)
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
            detail = f"{found[1]} pixels, limit {found[2]}: a possible decompression bomb" if found else str(exc)
            raise ImageReadError(f"{path}: image too large to decode safely ({detail})") from None
        except UnidentifiedImageError:
            if not head.startswith(_TIFF_MAGIC):
                raise ImageReadError(f"{path}: not an image (unrecognised format)") from None
            fmt, orientation = "TIFF-CV", 1  # TIFFs Pillow cannot read (float RGB, ...): OpenCV
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ImageReadError(f"{path}: cannot decode image ({text})") from None
        maybe_deep = fmt == "TIFF" or (fmt == "PNG" and len(head) > 24 and head[24] == 16)  # IHDR bit depth
        if fmt == "TIFF-CV" or (pixels is not None and pixels.ndim == 3 and maybe_deep):
            handle.seek(0)
            decoded = _decode_opencv(handle.read())
            if fmt == "TIFF-CV":
                if decoded is None:
                    raise ImageReadError(f"{path}: cannot decode image (unsupported TIFF layout)")
                pixels, bits = _pixels_from_array(decoded, path, notes)
            elif decoded is not None and decoded.dtype == np.uint16 and decoded.ndim == 3:
                # 16-bit colour, which Pillow reduces to 8 bits
                deep, _ = _pixels_from_array(_orient(decoded, orientation), path, [])
                if deep.shape == pixels.shape:
                    pixels, bits = deep, 16
    if pixels.ndim < 2 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
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
    try:
        ok, buffer = cv2.imencode(suffix, values, params)
    except cv2.error as exc:  # e.g. JPEG's 65535-pixel side limit
        reason = next((line for line in str(exc).splitlines() if "error:" in line), str(exc)).strip()
        raise ImageWriteError(f"could not encode a {values.shape[1]}x{values.shape[0]} {suffix} image ({reason[:200]})") from None
    if not ok:
        raise ImageWriteError(f"could not encode a {values.shape[1]}x{values.shape[0]} {suffix} image")
    return buffer.tobytes()


def write_image(path: str | os.PathLike, pixels: np.ndarray, bit_depth: int = 8) -> Path:
    """Atomically write (H, W) or (H, W, 3) [0, 1] pixels; format from the suffix.

    Failures are `ImageWriteError`s whose message starts with the path; no partial file is left.
    """
    path = Path(path)
    try:
        payload = encode_image(pixels, path.suffix, bit_depth)
    except ImageWriteError as exc:
        raise ImageWriteError(f"{path}: {exc}") from None
    try:
        write_bytes_atomic(path, payload)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path

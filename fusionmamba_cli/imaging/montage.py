"""A labelled side-by-side sheet of images of one scene (sources and fusions), for comparing by eye:
every image at native size in the top row, and below it a 4x enlargement of the same window of
each, the window where the images of interest differ most (marked on the top row)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fusionmamba_cli.imaging.io import to_integer

ZOOM = 4
_GAP = 4  # pixels between tiles
_LABEL_SIZE = 14  # font size of the labels
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_MARK = (255, 0, 0)


@dataclass(frozen=True)
class Window:
    """A square crop: top-left corner (y, x) and side length, in pixels."""

    y: int
    x: int
    side: int


def as_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1], (H, W) or (H, W, 3), as (H, W, 3) uint8 for display."""
    values = to_integer(pixels, 8)
    return np.repeat(values[..., None], 3, axis=2) if values.ndim == 2 else values


def _grey(pixels: np.ndarray) -> np.ndarray:
    return pixels.mean(axis=2) if pixels.ndim == 3 else pixels


def window_of_largest_difference(images: Sequence[np.ndarray], zoom: int = ZOOM) -> Window:
    """The square window (a `zoom`-th of the shorter side) where the images' per-pixel spread
    (max - min of their grey levels), summed over the window, is largest."""
    height, width = images[0].shape[:2]
    side = max(1, min(height, width) // zoom)
    stack = np.stack([_grey(np.asarray(image, dtype=np.float32)) for image in images])
    spread = (stack.max(axis=0) - stack.min(axis=0)).astype(np.float32)
    # Mean over each side x side window, anchored at its top-left corner.
    window_mean = cv2.boxFilter(spread, -1, (side, side), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
    valid = window_mean[: height - side + 1, : width - side + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return Window(int(y), int(x), side)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=_LABEL_SIZE)


def _labelled(tile: Image.Image, label: str, font, label_height: int) -> Image.Image:
    """`tile` with `label` written above it, on a white strip at least as wide as the text."""
    draw = ImageDraw.Draw(tile)
    text_width = int(np.ceil(draw.textlength(label, font=font)))
    canvas = Image.new("RGB", (max(tile.width, text_width), tile.height + label_height), _BACKGROUND)
    ImageDraw.Draw(canvas).text((0, 0), label, fill=_TEXT, font=font)
    canvas.paste(tile, (0, label_height))
    return canvas


def _row(tiles: Sequence[Image.Image]) -> Image.Image:
    width = sum(t.width for t in tiles) + _GAP * (len(tiles) - 1)
    row = Image.new("RGB", (width, max(t.height for t in tiles)), _BACKGROUND)
    x = 0
    for tile in tiles:
        row.paste(tile, (x, 0))
        x += tile.width + _GAP
    return row


def compose_montage(images: Sequence[tuple[str, np.ndarray]], window: Window, zoom: int = ZOOM) -> np.ndarray:
    """(label, float pixels) images of one size side by side at native size, `window` outlined on
    each, and under each its `zoom`-times enlargement (nearest neighbour: pixels stay visible).
    Returns (H, W, 3) uint8."""
    font = _font()
    label_height = _LABEL_SIZE + 4
    top, bottom = [], []
    for label, pixels in images:
        rgb = as_rgb8(pixels)
        crop = rgb[window.y : window.y + window.side, window.x : window.x + window.side]
        enlarged = cv2.resize(crop, (window.side * zoom, window.side * zoom), interpolation=cv2.INTER_NEAREST)
        native = Image.fromarray(rgb)
        ImageDraw.Draw(native).rectangle(
            (window.x, window.y, window.x + window.side - 1, window.y + window.side - 1), outline=_MARK
        )
        top.append(_labelled(native, label, font, label_height))
        bottom.append(_labelled(Image.fromarray(enlarged), f"{label} x{zoom}", font, label_height))
    # Each column as wide as its wider part, so the two rows line up.
    widths = [max(a.width, b.width) for a, b in zip(top, bottom)]
    rows = [_row([_padded(t, w) for t, w in zip(row, widths)]) for row in (top, bottom)]
    sheet = Image.new("RGB", (max(r.width for r in rows), rows[0].height + _GAP + rows[1].height), _BACKGROUND)
    sheet.paste(rows[0], (0, 0))
    sheet.paste(rows[1], (0, rows[0].height + _GAP))
    return np.asarray(sheet)


def _padded(tile: Image.Image, width: int) -> Image.Image:
    if tile.width == width:
        return tile
    canvas = Image.new("RGB", (width, tile.height), _BACKGROUND)
    canvas.paste(tile, (0, 0))
    return canvas

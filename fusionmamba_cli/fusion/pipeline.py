"""Fuse a pair of loaded images with the network: luminance fusion for colour sources, the task's
input order, native resolution (optionally tiled), clamping and optional min-max stretch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from fusionmamba_cli.errors import PairMismatchError
from fusionmamba_cli.fusion.tiling import fuse_tiled
from fusionmamba_cli.imaging.colour import rgb_to_ycbcr, ycbcr_to_rgb_in_gamut
from fusionmamba_cli.imaging.io import LoadedImage
from fusionmamba_cli.model import FusionMamba
from fusionmamba_cli.model.compiled import CompiledForward
from fusionmamba_cli.model.graphed import GraphedForward
from fusionmamba_cli.tasks import Task, get_task

NORMALIZE_MODES = ("none", "minmax")
# Images whose (padded) pixel count exceeds the budget are fused in overlapping tiles, so memory
# stays bounded for any image size. The default budget is worked out from the network's width and
# the memory of the device; `--max-pixels` or FUSIONMAMBA_MAX_PIXELS pin it.
MAX_PIXELS_ENV = "FUSIONMAMBA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2048 * 2048  # when the machine's memory cannot be read
DEFAULT_TILE = 1024  # largest automatic tile side (multiple of every preset's size multiple)
DEFAULT_TILE_OVERLAP = 128  # see fusion/tiling.py: the outer quarter is discarded, the middle half blended
# Measured peak inference memory (float32, torch scan, CPU) per padded input pixel and per channel
# of the first level (dims[0]): compact (16) ~1.1 kB/px, compact-large (32) ~2.2 kB, official (96)
# ~6.7 kB. Rounded up for safety.
BYTES_PER_PIXEL_PER_CHANNEL = 80
CPU_MEMORY_FRACTION = 0.25  # of physical RAM, shared between local distributed ranks
CUDA_MEMORY_FRACTION = 0.5  # of the GPU's memory
MIN_MAX_PIXELS = 64 * 64


def estimated_bytes_per_pixel(model: FusionMamba) -> float:
    """Rough peak inference memory per padded input pixel (what the budget divides)."""
    dtype_scale = next(model.parameters()).element_size() / 4
    return BYTES_PER_PIXEL_PER_CHANNEL * model.config.dims[0] * max(dtype_scale, 0.5)


def _memory_budget_bytes(device: torch.device) -> int | None:
    """A deterministic share of the device's total memory (not of what is free right now, which
    changes from run to run and would make tiling, hence outputs, vary)."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * CUDA_MEMORY_FRACTION)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return int(total * CPU_MEMORY_FRACTION / local_ranks)


def parse_pixels(text: str) -> int:
    """'4000000', '4M', '2048x2048' -> pixels (ValueError when not one of those)."""
    value = text.strip().lower().replace("_", "")
    if "x" in value:
        height, width = value.split("x", 1)
        return int(height) * int(width)
    scale = {"k": 1000, "m": 1000**2, "g": 1000**3}.get(value[-1:], 1)
    number = float(value[:-1]) if scale > 1 else int(value)
    return int(number * scale)


def default_max_pixels(model: FusionMamba, device: torch.device | str) -> int:
    """The pixel budget: FUSIONMAMBA_MAX_PIXELS if set, else memory budget / bytes per pixel."""
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            return max(MIN_MAX_PIXELS, parse_pixels(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r}: not a pixel count (e.g. 4000000, 4M or 2048x2048)") from None
    budget = _memory_budget_bytes(torch.device(device))
    if budget is None:
        return DEFAULT_MAX_PIXELS
    return max(MIN_MAX_PIXELS, int(budget / estimated_bytes_per_pixel(model)))


@dataclass
class FusedImage:
    """Fused pixels in [0, 1] ((H, W) grey or (H, W, 3) RGB) and the bit depth to write them at."""

    pixels: np.ndarray
    bit_depth: int
    notes: list[str] = field(default_factory=list)


def _split_luma(image: LoadedImage) -> tuple[np.ndarray, np.ndarray | None]:
    """(Y, CbCr or None): colour is fused on its BT.601 luminance, chroma set aside."""
    if not image.is_colour:
        return image.pixels, None
    ycbcr = rgb_to_ycbcr(image.pixels)
    return ycbcr[..., 0], ycbcr[..., 1:]


def _resize_to(image: LoadedImage, size_hw: tuple[int, int]) -> LoadedImage:
    height, width = size_hw
    pixels = cv2.resize(image.pixels, (width, height), interpolation=cv2.INTER_CUBIC)
    return LoadedImage(np.clip(pixels, 0.0, 1.0), image.bit_depth, image.notes + [f"resized to {width}x{height}"])


def align_sizes(first: LoadedImage, second: LoadedImage, resize: bool, names: tuple[str, str] = ("first", "second")) -> tuple[LoadedImage, LoadedImage]:
    """Same-size sources pass; otherwise resize the smaller to the larger (if allowed) or refuse."""
    if first.size_hw == second.size_hw:
        return first, second
    if not resize:
        (h1, w1), (h2, w2) = first.size_hw, second.size_hw
        raise PairMismatchError(f"sizes differ: {names[0]} is {w1}x{h1}, {names[1]} is {w2}x{h2} (use --resize)")
    if first.size_hw[0] * first.size_hw[1] >= second.size_hw[0] * second.size_hw[1]:
        return first, _resize_to(second, first.size_hw)
    return _resize_to(first, second.size_hw), second


def minmax_stretch(pixels: torch.Tensor) -> torch.Tensor:
    """Per-image (v - min) / (max - min), as the authors' test script does."""
    flat = pixels.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (pixels - lo) / (hi - lo).clamp_min(1e-12)


class Fuser:
    """A loaded network plus the settings of one fusion job; fuses pairs of `LoadedImage`s."""

    def __init__(
        self,
        model: FusionMamba,
        *,
        task: str | Task | None = None,
        device: torch.device | str | None = None,
        normalize: str = "none",
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        max_pixels: int | None = None,
        cuda_graphs: bool = True,
        compiled: bool = False,
        scan_backend: str | None = None,
    ) -> None:
        """`tile`: always tile images larger than this; else tile automatically above `max_pixels`
        (padded pixels per network call; None: `default_max_pixels`). `cuda_graphs`: on a GPU,
        replay one captured CUDA graph per input shape (see model/graphed.py). `compiled`: run the
        network through torch.compile (model/compiled.py; minutes of compiling per input shape).
        `scan_backend`: force this selective-scan backend on the model (None: keep the model's)."""
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if tile is not None and tile < 1:
            raise ValueError(f"tile must be a positive size, got {tile}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        if scan_backend is not None:
            self.model.set_scan_backend(scan_backend)
        self.forward = GraphedForward(CompiledForward(self.model, enabled=compiled), enabled=cuda_graphs)
        self.task = task if isinstance(task, Task) else get_task(task)
        self.normalize = normalize
        self.tile, self.tile_overlap = tile, max(0, tile_overlap)
        self.max_pixels = max(1, max_pixels) if max_pixels is not None else default_max_pixels(self.model, self.device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def padded_pixels(self, height: int, width: int) -> int:
        """Pixels the network really processes for an image: sides padded to its size multiple."""
        multiple = self.model.size_multiple
        return (-(-height // multiple) * multiple) * (-(-width // multiple) * multiple)

    def auto_tile(self) -> int:
        """Largest tile side within the budget: a multiple of the network's size multiple, at most
        DEFAULT_TILE, at least one multiple."""
        multiple = self.model.size_multiple
        side = math.isqrt(self.max_pixels) // multiple * multiple
        return max(multiple, min(DEFAULT_TILE, side))

    def plan_tile(self, batch: int, height: int, width: int) -> int | None:
        """The tile side the network call for a (batch, height, width) input will use, or None."""
        tile = self.tile
        if tile is None and batch * self.padded_pixels(height, width) > self.max_pixels:
            tile = self.auto_tile()
        if tile is not None and (height > tile or width > tile):
            return tile
        return None

    def _network(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The model on (B, 1, H, W) batches, tiled when asked or when the image is over budget."""
        batch, _, height, width = x1.shape
        tile = self.plan_tile(batch, height, width)
        if tile is None:
            return self.forward(x1, x2)
        if batch > 1:  # over budget as a batch: one image at a time (each tiled only if it must be)
            return torch.cat([self._network(x1[i : i + 1], x2[i : i + 1]) for i in range(batch)])
        return fuse_tiled(self.forward, x1, x2, tile, self.tile_overlap)

    @torch.inference_mode()
    def fuse_luma(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Fuse stacks of grey images (B, H, W) in [0, 1], user order -> (B, H, W) in [0, 1]."""
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype)[:, None]
        x1, x2 = self.task.to_network_order(to_tensor(first), to_tensor(second))
        fused = self._network(x1, x2).float().clamp_(0.0, 1.0)
        if self.normalize == "minmax":
            fused = minmax_stretch(fused)
        return fused[:, 0].cpu().numpy()

    def fuse_many(self, pairs: list[tuple[LoadedImage, LoadedImage]]) -> list[FusedImage]:
        """Fuse same-size pairs in one network batch (sizes must already agree)."""
        lumas = [(_split_luma(a), _split_luma(b)) for a, b in pairs]
        fused = self.fuse_luma(np.stack([la[0] for la, _ in lumas]), np.stack([lb[0] for _, lb in lumas]))
        results = []
        for (first, second), ((_, chroma1), (_, chroma2)), y in zip(pairs, lumas, fused):
            notes = first.notes + second.notes
            bit_depth = max(first.bit_depth, second.bit_depth)
            chroma = self._chroma(chroma1, chroma2)
            if chroma is None:
                results.append(FusedImage(y, bit_depth, notes))
                continue
            rgb = ycbcr_to_rgb_in_gamut(np.concatenate([y[..., None], chroma], axis=-1))
            results.append(FusedImage(rgb, bit_depth, notes))
        return results

    def _chroma(self, chroma1: np.ndarray | None, chroma2: np.ndarray | None) -> np.ndarray | None:
        """Chroma of the colour source; when both are colour, the task's colour modality wins."""
        if chroma1 is None or chroma2 is None:
            return chroma1 if chroma1 is not None else chroma2
        return chroma1 if self.task.colour_index == 0 else chroma2

    def fuse(self, first: LoadedImage, second: LoadedImage, *, resize: bool = False) -> FusedImage:
        """Fuse one pair given in the task's (user's) order."""
        first, second = align_sizes(first, second, resize, self.task.modalities)
        return self.fuse_many([(first, second)])[0]


def fuse_images(
    model: FusionMamba,
    first: np.ndarray,
    second: np.ndarray,
    *,
    task: str | None = None,
    normalize: str = "none",
) -> np.ndarray:
    """Library one-liner: fuse two [0, 1] float arrays ((H, W) grey or (H, W, 3) RGB), user order."""
    fuser = Fuser(model, task=task, normalize=normalize)
    return fuser.fuse(LoadedImage(np.asarray(first, np.float32)), LoadedImage(np.asarray(second, np.float32))).pixels

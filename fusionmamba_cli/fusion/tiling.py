"""Tiled inference for images too large to fuse in one pass: overlapping tiles, blended with
weights that ramp linearly over the overlap, so seams do not show."""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, device: torch.device) -> torch.Tensor:
    """1-D blending weight: rises over `overlap` pixels at both ends, 1 in the middle."""
    idx = torch.arange(length, device=device, dtype=torch.float32)
    if overlap <= 0:
        return torch.ones(length, device=device)
    rising = (idx + 1) / (overlap + 1)
    return torch.minimum(torch.ones_like(idx), torch.minimum(rising, rising.flip(0)))


def fuse_tiled(
    network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    x2: torch.Tensor,
    tile: int,
    overlap: int,
) -> torch.Tensor:
    """Run `network` on overlapping tiles of (B, 1, H, W) inputs and blend the outputs."""
    _, _, height, width = x1.shape
    out = torch.zeros_like(x1, dtype=torch.float32)
    weight_sum = torch.zeros((1, 1, height, width), device=x1.device, dtype=torch.float32)
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            piece = network(x1[window], x2[window]).float()
            h, w = piece.shape[-2:]
            weight = _ramp(h, overlap, x1.device)[:, None] * _ramp(w, overlap, x1.device)[None, :]
            out[window] += piece * weight
            weight_sum[window] += weight
    return (out / weight_sum).to(x1.dtype)

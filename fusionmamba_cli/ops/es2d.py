"""ES2D, the atrous 2-D scan layout of EfficientVMamba as the FusionMamba code uses it.

A (B, D, H, W) map is zero-padded to even H, W and split into four disjoint sub-grids, each
flattened once (no reversed directions):
    k=0 rows 0::2, cols 0::2, row-major      k=1 rows 1::2, cols 0::2, column-major
    k=2 rows 0::2, cols 1::2, row-major      k=3 rows 1::2, cols 1::2, column-major
Padded positions are scanned too (u = 0 there but the state still decays), as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (row offset, column offset, column-major?) per direction k
_SUBGRIDS = ((0, 0, False), (1, 0, True), (0, 1, False), (1, 1, True))


def es2d_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, L) with L = ceil(H/2) * ceil(W/2)."""
    height, width = x.shape[-2:]
    x = F.pad(x, (0, width % 2, 0, height % 2))
    sequences = []
    for row, col, column_major in _SUBGRIDS:
        grid = x[:, :, row::2, col::2]
        if column_major:
            grid = grid.transpose(-1, -2)
        sequences.append(grid.flatten(2))
    return torch.stack(sequences, dim=1)


def es2d_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, L) -> (B, D, H, W): each direction writes back to its own sub-grid, padding cropped."""
    batch, _, channels, _ = y.shape
    half_h, half_w = (height + 1) // 2, (width + 1) // 2
    out = y.new_empty(batch, channels, 2 * half_h, 2 * half_w)
    for k, (row, col, column_major) in enumerate(_SUBGRIDS):
        if column_major:
            grid = y[:, k].reshape(batch, channels, half_w, half_h).transpose(-1, -2)
        else:
            grid = y[:, k].reshape(batch, channels, half_h, half_w)
        out[:, :, row::2, col::2] = grid
    return out[:, :, :height, :width]


def es2d_scan_time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, L, D): `es2d_scan`'s sequences with each step's D channels contiguous
    (the numba scan's layout); cheapest from a channels-last map (whole rows of D are copied)."""
    batch, channels, height, width = x.shape
    half_h, half_w = (height + 1) // 2, (width + 1) // 2
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2))
    pixels = x.permute(0, 2, 3, 1)  # (B, H', W', D), a view
    out = x.new_empty(batch, len(_SUBGRIDS), half_h * half_w, channels)
    for k, (row, col, column_major) in enumerate(_SUBGRIDS):
        grid = pixels[:, row::2, col::2]
        if column_major:
            out[:, k].view(batch, half_w, half_h, channels).copy_(grid.transpose(1, 2))
        else:
            out[:, k].view(batch, half_h, half_w, channels).copy_(grid)
    return out

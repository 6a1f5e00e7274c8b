"""Launch configuration of the scan kernels: tiles, warps, channels per program, which backward.

The values were settled by H100 sweeps (BENCHMARKS.md, "Selective scan on the GPU"); they are
constants here, and the rules pick among them by the number of programs per SM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_CHUNK = 128  # tiled backward: time steps per tile, and the spacing of the saved states

# Forward without gradients, (max programs per SM, tile, warps), first match: with few programs the
# serial walk over L is the critical path and long tiles with more warps win; with many the GPU is
# full and small one-warp programs win.
INFER_RULES = ((4, 256, 4), (16, 128, 2), (float("inf"), 64, 1))
FORWARD_WARPS = {16: 1, 32: 1, 64: 2, 128: 2, 256: 4, 512: 8, 1024: 8}  # by tile; 4 otherwise
# Tiled backward, warps by chunk (4 otherwise): N x chunk fp32 tiles per thread grow with the chunk.
TILED_WARPS = {8: 4, 16: 4, 32: 4, 64: 4, 128: 4, 256: 8, 512: 8, 1024: 16}
PROGRAMS_PER_SM = 8  # tiled backward: enough programs per SM before channels are grouped per program
PARTIAL_BUDGET_BYTES = 512 * 1024 * 1024  # tiled backward: its fp32 dB/dC partials, both together
# Statewise backward, (max programs per SM, tile), first match: 1024 while all programs fit on the
# GPU at once, else 512 (more resident programs, fewer waves). Capped by the sequence length.
STATEWISE_TILE_RULES = ((2, 1024), (float("inf"), 512))
STATEWISE_WARPS = 4  # at most tile / 32
BACKWARDS = ("auto", "tiled", "statewise")
_CPU_SMS = 132  # what the heuristics assume without CUDA (the interpreter): an H100's count

_SM_COUNTS: dict[int, int] = {}  # by CUDA device index (a plain dict: torch.compile warns on lru_cache)


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (cached per index)."""
    if device.type != "cuda":
        return _CPU_SMS
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


def check_chunk(chunk: int) -> int:
    """`chunk` as an int, or ValueError unless it is a power of two >= 2."""
    chunk = int(chunk)
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two >= 2, got {chunk}")
    return chunk


def forward_warps(tile: int) -> int:
    """Warps of the forward kernel at this tile."""
    return FORWARD_WARPS.get(tile, 4)


def infer_config(programs: int, device: torch.device) -> tuple[int, int]:
    """(tile, warps) of the gradient-free forward, from the number of programs per SM."""
    per_sm = programs / num_sms(device)
    for limit, tile, warps in INFER_RULES:
        if per_sm <= limit:
            return tile, warps
    return 64, 1


def tiled_warps(chunk: int) -> int:
    """Warps of the tiled backward at this chunk."""
    return TILED_WARPS.get(chunk, 4)


def choose_block_d(batch: int, channels: int, per_group: int, n_state: int, length: int,
                   device: torch.device) -> int:
    """Channels per tiled-backward program: as many as keep >= PROGRAMS_PER_SM programs per SM (fewer
    dB/dC partials), more if the partials would exceed the memory budget. Always a divisor of
    `per_group` (one group per program)."""
    divisors = [d for d in range(1, per_group + 1) if per_group % d == 0]
    target = PROGRAMS_PER_SM * num_sms(device)
    fitting = [d for d in divisors if batch * (channels // d) >= target]
    block = fitting[-1] if fitting else 1
    for d in divisors:
        if d < block:
            continue
        block = d
        if 2 * batch * (channels // d) * n_state * length * 4 <= PARTIAL_BUDGET_BYTES:
            break
    return block


def statewise_tile(length: int, programs_per_sm: float) -> int:
    """Tile of the statewise backward from STATEWISE_TILE_RULES, capped at max(16, the next power
    of two >= length) so that short sequences scan no padding."""
    tile = next(t for limit, t in STATEWISE_TILE_RULES if programs_per_sm <= limit)
    return min(tile, max(16, 1 << max(0, (int(length) - 1).bit_length())))


def statewise_warps(tile: int) -> int:
    """Warps of the statewise backward: STATEWISE_WARPS, at most tile/32 (no warps holding only copies)."""
    return max(1, min(STATEWISE_WARPS, tile // 32))


def backward_impl(requested: str = "auto") -> str:
    """The backward kernel: "tiled" or "statewise" as asked; "auto" is the statewise one (faster)
    unless torch's deterministic algorithms are on (its dB/dC atomics are not deterministic)."""
    if requested not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}; got {requested!r}")
    if requested == "auto":
        return "tiled" if torch.are_deterministic_algorithms_enabled() else "statewise"
    return requested


@dataclass(frozen=True)
class ForwardPlan:
    """How the forward walks L and which states it saves for the backward (`impl`, `bwd_tile`)."""

    tile: int
    warps: int
    n_tiles: int
    save_every: int  # a state is saved entering every save_every-th forward tile
    n_saved: int
    impl: str  # the backward kernel the saved states are laid out for
    bwd_tile: int


def plan_forward(batch: int, channels: int, length: int, device: torch.device, *, chunk: int,
                 explicit_chunk: bool, save: bool, backward: str) -> ForwardPlan:
    """The forward's tile and warps, and for training the backward and its tile: the forward saves
    the state entering every `bwd_tile` steps (both tiles are powers of two)."""
    chunk = check_chunk(chunk)
    impl = backward_impl(backward) if save else "tiled"
    bwd_tile = chunk
    if save and impl == "statewise":
        # the forward walks its own tiles (the gradient-free forward's, unless `chunk` is given)
        bwd_tile = statewise_tile(length, batch * channels / num_sms(device))
        tile, warps = (chunk, None) if explicit_chunk else infer_config(batch * channels, device)
        if tile > bwd_tile or warps is None:
            tile = min(tile, bwd_tile)
            warps = forward_warps(tile)
    elif save or explicit_chunk:
        tile, warps = chunk, forward_warps(chunk)
    else:
        tile, warps = infer_config(batch * channels, device)
    n_tiles = max(1, -(-length // tile))
    save_every = bwd_tile // tile if save else 1
    n_saved = -(-n_tiles // save_every)  # = max(1, ceil(length / bwd_tile)) when saving
    return ForwardPlan(tile, int(warps), n_tiles, save_every, n_saved, impl, bwd_tile)

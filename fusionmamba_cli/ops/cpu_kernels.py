"""Fused CPU kernels for the small ops around the scan, compiled at run time by numba.

At 256x256 the compact model's forward is ~300 small torch ops on 16-128 channels; LayerNorm alone
was ~16 ms of a ~105 ms single-thread forward (torch's CPU kernel costs ~5 ns per element on
channels-last rows of 4-64 values). These kernels do one pass over a channels-last map each:

* `layer_norm`: LayerNorm over the last dim of a (..., C) map of any strides.
* `layer_norm_mean`: mean over H, W of LayerNorm(x) without materialising it (SqueezeExcite), and
  `squeeze_excite_gate`: that mean through SE's two Linear layers, GELU and sigmoid.
* `merge_norm`: ES2D merge of the scan's output + LayerNorm, the tail of ESSM / CMFM, reading the
  four directions' sequences by index arithmetic (no flipped or transposed copies);
  `merge_norm_time_major` the same from the numba scan's time-major output.
* `norm_project`: the head's depth-to-space + LayerNorm(C/16) + 1x1 conv to one channel.
* `separable_filter`: the two-scale rule's Gaussian blurs, by OpenCV's separable filter (0.5 ms
  for a 256x256 plane at radius 24, where a 1-channel conv2d pair took 7.2 ms).

`layer_norm`, `layer_norm_mean`, `merge_norm_time_major` and `norm_project` split their rows over
torch's threads (`prange`; a 2-thread call of 10-130 us costs ~60 % of a 1-thread one here, even
small ones); `merge_norm` stays serial (one scratch map). Each row is computed the same way on any
thread, and the mean's partial sums are fixed blocks summed in a fixed order, so results do not
depend on the thread count. Reductions over a row may be reassociated (`fastmath` reassoc), so
values differ from torch's in the last bits (parity tests: 1e-5 relative). fp32 in, fp32 out; callers gate on `ops.fused.cpu_kernels_for`.
"""

from __future__ import annotations

import math

import cv2
import numba
from numba import prange
import numpy as np
import torch

from fusionmamba_cli.ops.scan_numba import run_on_torch_threads

# reassoc lets a row's sums vectorise; no 'nnan'/'ninf'/'afn': NaN/inf propagate, math stays exact per op
_FAST = {"reassoc", "contract"}


def _jit(fn=None, **options):
    """`numba.njit`, cached on disk where numba finds a writable place (as the scan), else per process."""
    if fn is None:
        return lambda f: _jit(f, **options)
    try:
        return numba.njit(cache=True, fastmath=_FAST, boundscheck=False, nogil=True, error_model="numpy", **options)(fn)
    except RuntimeError:  # "no locator available": compile once per process
        return numba.njit(cache=False, fastmath=_FAST, boundscheck=False, nogil=True, error_model="numpy", **options)(fn)


@_jit(parallel=True)
def _layer_norm_kernel(x, weight, bias, eps, out):  # pragma: no cover - compiled, tested through the wrappers
    """out[r, :] = (x[r, :] - mean) * rstd * weight + bias for every row of the (R, C) arrays.

    Moments in two passes (the variance from the centred values, as torch), written out in each
    kernel: a helper taking a row slice kept LLVM from vectorising the row loops (2.4x slower).
    """
    rows, channels = x.shape
    for r in prange(rows):
        total = np.float32(0.0)
        for c in range(channels):
            total += x[r, c]
        mean = total / np.float32(channels)
        spread = np.float32(0.0)
        for c in range(channels):
            d = x[r, c] - mean
            spread += d * d
        rstd = np.float32(1.0) / np.sqrt(spread / np.float32(channels) + eps)
        for c in range(channels):
            out[r, c] = (x[r, c] - mean) * rstd * weight[c] + bias[c]


@_jit(parallel=True)
def _layer_norm_mean_kernel(x, weight, bias, eps, out):  # pragma: no cover - compiled
    """out[b, c] = mean over rows of LayerNorm(x[b])[:, c], x (B, R, C); the mean accumulated in fp64,
    in fixed blocks of rows summed in a fixed order (the result does not depend on the thread count)."""
    batch, rows, channels = x.shape
    block = 256
    blocks = (rows + block - 1) // block
    partial = np.zeros((batch * blocks, channels), np.float64)
    for item in prange(batch * blocks):
        b = item // blocks
        for r in range((item % blocks) * block, min(rows, (item % blocks + 1) * block)):
            total = np.float32(0.0)
            for c in range(channels):
                total += x[b, r, c]
            mean = total / np.float32(channels)
            spread = np.float32(0.0)
            for c in range(channels):
                d = x[b, r, c] - mean
                spread += d * d
            rstd = np.float32(1.0) / np.sqrt(spread / np.float32(channels) + eps)
            for c in range(channels):
                partial[item, c] += np.float64((x[b, r, c] - mean) * rstd)
    for b in range(batch):
        for c in range(channels):
            acc = 0.0
            for k in range(blocks):
                acc += partial[b * blocks + k, c]
            out[b, c] = np.float32(acc / rows) * weight[c] + bias[c]


@_jit
def _mlp_gate_kernel(pooled, w1, b1, w2, b2, out):  # pragma: no cover - compiled
    """out[b] = sigmoid(W2 GELU(W1 pooled[b] + b1) + b2): SqueezeExcite's gate on (B, C) vectors
    (exact GELU by erf, as torch's default), one call instead of five tiny torch ops."""
    batch, channels = pooled.shape
    hidden = w1.shape[0]
    mid = np.empty(hidden, np.float32)
    for b in range(batch):
        for k in range(hidden):
            acc = b1[k]
            for c in range(channels):
                acc += w1[k, c] * pooled[b, c]
            mid[k] = np.float32(0.5) * acc * (np.float32(1.0) + math.erf(acc * np.float32(0.7071067811865476)))
        for c in range(channels):
            acc = b2[c]
            for k in range(hidden):
                acc += w2[c, k] * mid[k]
            out[b, c] = np.float32(1.0) / (np.float32(1.0) + np.exp(-acc))


@_jit
def _merge_norm_kernel(ys, weight, bias, eps, merged, out):  # pragma: no cover - compiled
    """out[b, h, w, :] = LN(y) where y is pixel (h, w)'s D values in the ES2D output ys.

    ys (B, 4*D, L) with L = hh * ww: direction k = 2 * (w odd) + (h odd) holds the sub-grid
    (h % 2, w % 2); k = 0, 2 row-major (l = i * ww + j), k = 1, 3 column-major (l = j * hh + i),
    as `es2d.es2d_merge` reads them. `merged` is (2*hh, 2*ww, D) scratch: the merge is first a
    transpose into it, 16 steps of a sequence at a time through a (16, D) tile (a per-pixel gather
    of D channels L apart missed the cache, and an integer division per element cost 2x), then each
    pixel's row is normalised.
    """
    batch, height, width, channels = out.shape
    hh, ww = (height + 1) // 2, (width + 1) // 2
    tile = np.empty((16, channels), np.float32)
    for b in range(batch):
        for k in range(4):
            row0, col0 = k % 2, k // 2
            outer, inner = (ww, hh) if k % 2 else (hh, ww)  # k = 1, 3 run down columns
            for a in range(outer):
                for t0 in range(0, inner, 16):
                    steps = min(16, inner - t0)
                    for c in range(channels):
                        for t in range(steps):
                            tile[t, c] = ys[b, k * channels + c, a * inner + t0 + t]
                    for t in range(steps):
                        i, j = (t0 + t, a) if k % 2 else (a, t0 + t)
                        for c in range(channels):
                            merged[2 * i + row0, 2 * j + col0, c] = tile[t, c]
        for h in range(height):
            for w in range(width):
                total = np.float32(0.0)
                for c in range(channels):
                    total += merged[h, w, c]
                mean = total / np.float32(channels)
                spread = np.float32(0.0)
                for c in range(channels):
                    d = merged[h, w, c] - mean
                    spread += d * d
                rstd = np.float32(1.0) / np.sqrt(spread / np.float32(channels) + eps)
                for c in range(channels):
                    out[b, h, w, c] = (merged[h, w, c] - mean) * rstd * weight[c] + bias[c]


@_jit(parallel=True)
def _merge_norm_time_major_kernel(ys, weight, bias, eps, out):  # pragma: no cover - compiled
    """out[b, h, w, :] = LN(ys[b, k, l, :]) with (k, l) the ES2D position of pixel (h, w).

    ys (B, 4, L, D) time-major, L = hh * ww: direction k = 2 * (w odd) + (h odd) holds the sub-grid
    (h % 2, w % 2), k = 0, 2 row-major (l = i * ww + j), k = 1, 3 column-major (l = j * hh + i).
    Each pixel's D channels are one contiguous row of ys: no transpose, no scratch.
    """
    batch, height, width, channels = out.shape
    hh, ww = (height + 1) // 2, (width + 1) // 2
    for row in prange(batch * height):
        b, h = row // height, row % height
        i = h // 2
        for w in range(width):
            j = w // 2
            k = 2 * (w % 2) + h % 2
            l = j * hh + i if h % 2 else i * ww + j
            total = np.float32(0.0)
            for c in range(channels):
                total += ys[b, k, l, c]
            mean = total / np.float32(channels)
            spread = np.float32(0.0)
            for c in range(channels):
                d = ys[b, k, l, c] - mean
                spread += d * d
            rstd = np.float32(1.0) / np.sqrt(spread / np.float32(channels) + eps)
            for c in range(channels):
                out[b, h, w, c] = (ys[b, k, l, c] - mean) * rstd * weight[c] + bias[c]


@_jit(parallel=True)
def _norm_project_kernel(e, scale, weight, bias, eps, proj, proj_bias, out):  # pragma: no cover - compiled
    """out[b, 0, h*s + p, w*s + q] = proj . LN(e[b, h, w, (p*s + q)*c : +c]) + proj_bias."""
    batch, height, width, _ = e.shape
    channels = proj.shape[0]
    for row in prange(batch * height):
        b, h = row // height, row % height
        for p in range(scale):
            for w in range(width):
                for q in range(scale):
                    start = (p * scale + q) * channels
                    total = np.float32(0.0)
                    for c in range(channels):
                        total += e[b, h, w, start + c]
                    mean = total / np.float32(channels)
                    spread = np.float32(0.0)
                    for c in range(channels):
                        d = e[b, h, w, start + c] - mean
                        spread += d * d
                    rstd = np.float32(1.0) / np.sqrt(spread / np.float32(channels) + eps)
                    acc = proj_bias
                    for c in range(channels):
                        acc += proj[c] * ((e[b, h, w, start + c] - mean) * rstd * weight[c] + bias[c])
                    out[b, 0, h * scale + p, w * scale + q] = acc


def _np(x: torch.Tensor) -> np.ndarray:
    """A numpy view of an fp32 CPU tensor (strides kept; no copy)."""
    return x.detach().numpy()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as (R, C): a view where the strides allow one, else a contiguous copy."""
    try:
        return x.view(-1, x.shape[-1])
    except RuntimeError:
        return x.reshape(-1, x.shape[-1])


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """F.layer_norm over the last dim; (..., C) fp32 in, contiguous (..., C) out."""
    out = torch.empty(x.shape, dtype=torch.float32)
    run_on_torch_threads(_layer_norm_kernel, _np(_rows(x)), _np(weight), _np(bias), np.float32(eps), _np(out.view(-1, x.shape[-1])))
    return out


def layer_norm_mean(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """F.layer_norm(x).mean(dim=(1, 2)) for a (B, H, W, C) map: (B, C)."""
    batch, channels = x.shape[0], x.shape[-1]
    out = torch.empty(batch, channels, dtype=torch.float32)
    rows = x.reshape(batch, -1, channels)
    run_on_torch_threads(_layer_norm_mean_kernel, _np(rows), _np(weight), _np(bias), np.float32(eps), _np(out))
    return out


def squeeze_excite_gate(
    x: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float,
    w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
) -> torch.Tensor:
    """sigmoid(W2 GELU(W1 mean_hw(LN x) + b1) + b2) for a (B, H, W, C) map: (B, C)."""
    pooled = layer_norm_mean(x, norm_weight, norm_bias, eps)
    out = torch.empty_like(pooled)
    _mlp_gate_kernel(_np(pooled), _np(w1), _np(b1), _np(w2), _np(b2), _np(out))
    return out


def merge_norm(ys: torch.Tensor, height: int, width: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, 4*D, L) scan output -> (B, H, W, D) contiguous: `es2d_merge`, channels last, LayerNorm."""
    batch, channels, _ = ys.shape
    out = torch.empty(batch, height, width, channels // 4, dtype=torch.float32)
    merged = np.empty((height + height % 2, width + width % 2, channels // 4), np.float32)
    _merge_norm_kernel(_np(ys), _np(weight), _np(bias), np.float32(eps), merged, _np(out))
    return out


def merge_norm_time_major(
    ys: torch.Tensor, height: int, width: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """(B, 4, L, D) time-major scan output -> (B, H, W, D) contiguous: ES2D merge, LayerNorm."""
    batch, _, _, channels = ys.shape
    out = torch.empty(batch, height, width, channels, dtype=torch.float32)
    run_on_torch_threads(_merge_norm_time_major_kernel, _np(ys.contiguous()), _np(weight), _np(bias), np.float32(eps), _np(out))
    return out


def separable_filter(x: torch.Tensor, kernel: torch.Tensor, reflect: bool) -> torch.Tensor:
    """Each (H, W) plane of a (B, C, H, W) map filtered by `kernel` along both axes, borders reflected
    (as F.pad "reflect", OpenCV's REFLECT_101) or replicated; OpenCV's SIMD filter, not numba."""
    planes = x.detach().contiguous().numpy().reshape(-1, *x.shape[-2:])
    out = np.empty(planes.shape, np.float32)
    taps = kernel.detach().numpy()
    border = cv2.BORDER_REFLECT_101 if reflect else cv2.BORDER_REPLICATE
    for plane, result in zip(planes, out):
        cv2.sepFilter2D(plane, -1, taps, taps, dst=result, borderType=border)
    return torch.from_numpy(out).view(x.shape)


def norm_project(
    e: torch.Tensor, scale: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    proj: torch.Tensor, proj_bias: torch.Tensor,
) -> torch.Tensor:
    """(B, H, W, s*s*c) -> (B, 1, s*H, s*W): depth-to-space, LayerNorm(c), 1x1 conv to one channel."""
    batch, height, width, _ = e.shape
    out = torch.empty(batch, 1, height * scale, width * scale, dtype=torch.float32)
    run_on_torch_threads(
        _norm_project_kernel, _np(e), scale, _np(weight), _np(bias), np.float32(eps), _np(proj.reshape(-1)), np.float32(proj_bias.item()), _np(out)
    )
    return out

"""FMI and FMI_pixel: Haghighat's Fast-FMI (analysis_fmi.m, w = 3), README section 3 "FMI".

Convention: inputs are 2-D grey-level arrays 0..255, computed in float64. ``FMI`` runs Fast-FMI on
MATLAB Sobel ``edge`` maps (0/1), ``FMI_pixel`` on the raw grey levels. All windows are processed
at once (in bounded chunks) instead of MATLAB's per-pixel loop.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .grey import as_grey_float64, check_triplet

__all__ = ["sobel_edge", "fast_fmi", "fmi", "fmi_pixel"]

_W = 3  # analysis_fmi window size
_L = _W * _W
_IDX = np.arange(1, _L + 1, dtype=np.float64)
_IDX2 = _IDX * _IDX
_ONES = np.ones(_L)  # row sums as matrix-vector products (much faster than sum(axis=1) on 9 columns)
_NB = _L - 1  # inner CDF breakpoints per window
_NSEG = 2 * _NB + 1  # pieces of [0, 1] after merging the q and p breakpoints
_SEG = np.arange(_NSEG)
_TIE_TOL = 100 * np.finfo(np.float64).eps  # README edge step 5: absolute 100*eps tolerance
_CHUNK = 4096  # windows per chunk; bounds the (chunk, 17) and (chunk, 9) temporaries to well under 1 MB


def sobel_edge(img: np.ndarray) -> np.ndarray:
    """MATLAB ``edge(I)`` (Sobel, automatic threshold, thinning) as a boolean map, on 0..255 values."""
    x = as_grey_float64(img)
    h, w = x.shape
    p = np.pad(x, 1, mode="edge")  # README edge step 2: imfilter 'replicate' border
    left = p[0:h, 0:w] + 2 * p[1 : h + 1, 0:w] + p[2 : h + 2, 0:w]
    right = p[0:h, 2 : w + 2] + 2 * p[1 : h + 1, 2 : w + 2] + p[2 : h + 2, 2 : w + 2]
    top = p[0:h, 0:w] + 2 * p[0:h, 1 : w + 1] + p[0:h, 2 : w + 2]
    bottom = p[2 : h + 2, 0:w] + 2 * p[2 : h + 2, 1 : w + 1] + p[2 : h + 2, 2 : w + 2]
    gx = (left - right) / 8  # correlation with fspecial('sobel')'/8; multiples of 1/8, exact
    gy = (top - bottom) / 8
    s = gx * gx + gy * gy
    # README edge step 4: cutoff = 4 * mean(S) including the border; S sums exactly (1/64 grid).
    cutoff = 4 * np.sum(s) / s.size
    ax, ay = np.abs(gx), np.abs(gy)
    # README edge step 5: <= towards left/upper, > towards right/lower; outside neighbours pass.
    # Of two equal maxima this keeps the right/lower one (the README's prose says left/upper,
    # but its rule, which we follow, is what reproduces the golden FMI; mirrored, all fail).
    left_ok = np.ones_like(s, dtype=bool)
    right_ok = np.ones_like(s, dtype=bool)
    up_ok = np.ones_like(s, dtype=bool)
    down_ok = np.ones_like(s, dtype=bool)
    left_ok[:, 1:] = s[:, :-1] <= s[:, 1:]
    right_ok[:, :-1] = s[:, :-1] > s[:, 1:]
    up_ok[1:, :] = s[:-1, :] <= s[1:, :]
    down_ok[:-1, :] = s[:-1, :] > s[1:, :]
    along_x = (ax >= ay - _TIE_TOL) & left_ok & right_ok
    along_y = (ay >= ax - _TIE_TOL) & up_ok & down_ok
    return (s > cutoff) & (along_x | along_y)


def _windows(x: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """All 3x3 windows whose top row is in [r0, r1), flattened column-major (MATLAB X(:))."""
    v = sliding_window_view(x[r0 : r1 + _W - 1], (_W, _W))
    return v.transpose(0, 1, 3, 2).reshape(-1, _L)


def _is_constant(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` whose nine values are all equal."""
    return np.all(x == x[:, :1], axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Min-max normalise each row to 0..1; a constant row becomes all ones (analysis_fmi)."""
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    const = span[:, 0] == 0
    out = (x - lo) / np.where(span == 0, 1.0, span)
    out[const] = 1.0
    return out


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    """-sum p log2 p over the nonzero entries of each row."""
    safe = np.where(p > 0, p, 1.0)
    return -np.einsum("ki,ki->k", p, np.log2(safe))


def _pearson_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation; 0 where the centred cross product sums to exactly 0."""
    pc = p - p.mean(axis=1, keepdims=True)
    qc = q - q.mean(axis=1, keepdims=True)
    num = np.einsum("ki,ki->k", pc, qc)
    den = np.sqrt(np.einsum("ki,ki->k", pc, pc) * np.einsum("ki,ki->k", qc, qc))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = num / den
    return np.where(num == 0, 0.0, c)


def _index_sd(p: np.ndarray) -> np.ndarray:
    """sqrt(sum i^2 p_i - (sum i p_i)^2), i = 1..9 (clamped at 0 against rounding)."""
    m1 = p @ _IDX
    m2 = p @ _IDX2
    return np.sqrt(np.maximum(m2 - m1 * m1, 0.0))


def _neg_xlog2x_sum(x: np.ndarray) -> np.ndarray:
    """Row sums of -x*log2|x| over nonzero entries: MATLAB's real(-x*log2(x)), negatives included."""
    mag = np.abs(x)
    mag[mag == 0] = 1.0  # zero entries are skipped: log2(1) = 0
    return -np.einsum("ki,ki->k", x, np.log2(mag, out=mag))


def _coupling_cells(
    cdf_q: np.ndarray, cdf_p: np.ndarray, upper: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (i, j) (0-based) and masses of the Frechet-bound coupling, per row.

    The rectangle difference of U(i,j) = min(Q_i, P_j) (upper bound) is the length of the overlap
    of the intervals (Q_{i-1}, Q_i] and (P_{j-1}, P_j]; for L(i,j) = max(0, Q_i + P_j - 1) (lower
    bound) it is the overlap with (1 - P_j, 1 - P_{j-1}]. Merging the 8 + 8 inner breakpoints
    gives the 17 pieces of [0, 1] and the cell each lies in; all other cells have mass 0.
    """
    n = cdf_q.shape[0]
    q_brk = cdf_q[:, :_NB]
    p_brk = cdf_p[:, :_NB] if upper else 1.0 - cdf_p[:, _NB - 1 :: -1]
    brk = np.concatenate([q_brk, p_brk], axis=1)
    # Tie order is irrelevant: tied breakpoints bound zero-length pieces, which add nothing.
    order = np.argsort(brk, axis=1)
    edges = np.empty((n, _NSEG + 1))
    edges[:, 0] = 0.0
    edges[:, -1] = 1.0
    edges[:, 1:-1] = np.take_along_axis(brk, order, axis=1)
    mass = np.diff(edges, axis=1)
    i_idx = np.zeros((n, _NSEG), dtype=np.intp)
    np.cumsum(order < _NB, axis=1, out=i_idx[:, 1:])  # q-breakpoints passed so far
    m_idx = _SEG - i_idx  # p-breakpoints passed so far
    j_idx = m_idx if upper else _NB - m_idx
    return i_idx, j_idx, mass


def _copula_fmi(
    p: np.ndarray, q: np.ndarray, c: np.ndarray, sd_p: np.ndarray, sd_q: np.ndarray, upper: bool
) -> np.ndarray:
    """Fast-FMI of rows whose mixing weight phi is nonzero, with one Frechet bound for all rows.

    jpdf(i,j) = phi*dU(i,j) + (1-phi)*q_i*p_j is never materialised as 9x9: dU lives on at most
    17 cells (see _coupling_cells), and the entropy of the (1-phi)*q*p part is analytic. This
    equals the README's 81-cell sums up to rounding (~1e-13 per window, README 4 allows 1e-6).
    """
    cdf_p = np.cumsum(p, axis=1)
    cdf_q = np.cumsum(q, axis=1)
    i_idx, j_idx, mass = _coupling_cells(cdf_q, cdf_p, upper)
    # sum_ij U(i,j) = sum over cells of mass * #{(i', j') >= (i, j)}; sum_ij Q_i P_j = sum Q * sum P.
    sum_bound = np.einsum("ki,ki->k", mass, (_L - i_idx) * (_L - j_idx))
    cov_bound = sum_bound - (cdf_q @ _ONES) * (cdf_p @ _ONES)
    phi = c / (cov_bound / (sd_q * sd_p))
    r = 1 - phi
    h_p = _entropy_rows(p)
    h_q = _entropy_rows(q)
    sum_p = p @ _ONES
    sum_q = q @ _ONES
    # sum_ij -(r q_i p_j) log2|r q_i p_j| = r (sum_p H(q) + sum_q H(p)) - r log2|r| sum_p sum_q.
    with np.errstate(divide="ignore", invalid="ignore"):
        r_log = np.where(r == 0, 0.0, r * np.log2(np.abs(r)))
    h_product = r * (sum_p * h_q + sum_q * h_p) - r_log * sum_p * sum_q
    # On the coupling cells replace -x log2|x| of r*q*p by that of phi*mass + r*q*p.
    base = (r[:, None] * np.take_along_axis(q, i_idx, axis=1)) * np.take_along_axis(p, j_idx, axis=1)
    full = phi[:, None] * mass + base
    h_joint = h_product + _neg_xlog2x_sum(full) - _neg_xlog2x_sum(base)
    mi = h_p + h_q - h_joint
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mi == 0, 0.0, 2 * mi / (h_p + h_q))


def _fmi_term_dense(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fast-FMI of windows x (source) against y (fused), for rows where x != y."""
    out = np.zeros(x.shape[0])
    x_const = _is_constant(x)
    y_const = _is_constant(y)
    # README "MATLAB numerics": both windows constant (but different) -> c = 1, phi = 1 -> 1.
    out[x_const & y_const] = 1.0
    # Exactly one constant window: its pdf is uniform, so c = 0 exactly, phi = 0, the jpdf is
    # the product of the marginals and mi = 0 -> fmi = 0 (rows left at 0).
    live = ~(x_const | y_const)
    if not np.any(live):
        return out
    xn = _normalise(x[live])
    yn = _normalise(y[live])
    p = xn / (xn @ _ONES)[:, None]
    q = yn / (yn @ _ONES)[:, None]
    c = _pearson_rows(p, q)
    sd_p = _index_sd(p)
    sd_q = _index_sd(q)
    # phi = 0 (c == 0 with the upper bound, or a zero index spread) also gives mi = 0 -> 0.
    mixing = (c != 0) & (sd_p != 0) & (sd_q != 0)
    vals = np.zeros(p.shape[0])
    for upper in (True, False):
        rows = mixing & ((c >= 0) if upper else (c < 0))
        if np.any(rows):
            vals[rows] = _copula_fmi(p[rows], q[rows], c[rows], sd_p[rows], sd_q[rows], upper)
    out[live] = vals
    return out


def _binary_codes(x: np.ndarray) -> np.ndarray | None:
    """9-bit integer code of each 0/1 row, or None when some value is not 0 or 1."""
    if not np.all((x == 0) | (x == 1)):
        return None
    return x.astype(np.int64) @ (1 << np.arange(_L, dtype=np.int64))


def _fmi_term(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fast-FMI per row; binary (edge-map) windows are evaluated once per distinct (x, y) pair."""
    cx = _binary_codes(x)
    cy = _binary_codes(y) if cx is not None else None
    if cx is None or cy is None:
        return _chunked(x, y)
    uniq, first, inverse = np.unique((cx << _L) | cy, return_index=True, return_inverse=True)
    return _chunked(x[first], y[first])[inverse.ravel()]


def _chunked(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """_fmi_term_dense over rows in chunks of _CHUNK to bound memory."""
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], _CHUNK):
        out[s : s + _CHUNK] = _fmi_term_dense(x[s : s + _CHUNK], y[s : s + _CHUNK])
    return out


def _fmi_block(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(fmi_AF + fmi_BF) / 2 for a block of flattened windows."""
    score_a = np.ones(a.shape[0])
    score_b = np.ones(a.shape[0])
    run_a = ~np.all(a == f, axis=1)
    score_a[run_a] = _fmi_term(a[run_a], f[run_a])
    # README quirk: after the A-branch ran, F's window is replaced by its normalised copy, so
    # the B-branch equality test compares raw b with normalised f (the pdf of f is unchanged).
    f_b = f.copy()
    f_b[run_a] = _normalise(f[run_a])
    run_b = ~np.all(b == f_b, axis=1)
    score_b[run_b] = _fmi_term(b[run_b], f_b[run_b])
    return (score_a + score_b) / 2


def fast_fmi(fa: np.ndarray, fb: np.ndarray, ff: np.ndarray) -> float:
    """Mean over all 3x3 windows of (fmi_AF + fmi_BF)/2 on given feature maps (order matters)."""
    fa, fb, ff = check_triplet(fa, fb, ff)
    h, w = fa.shape
    if h < _W or w < _W:
        raise ValueError(f"FMI needs images of at least {_W}x{_W}, got {fa.shape}")
    n_rows = h - _W + 1
    rows_per_block = max(1, 65536 // (w - _W + 1))  # ~64k windows per block
    parts = []
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        parts.append(_fmi_block(_windows(fa, r0, r1), _windows(fb, r0, r1), _windows(ff, r0, r1)))
    return float(np.mean(np.concatenate(parts)))


def fmi(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """FMI: Fast-FMI on MATLAB Sobel edge maps (analysis_fmi default feature 'edge')."""
    a64, b64, f64 = check_triplet(a, b, f)
    edges = [sobel_edge(x).astype(np.float64) for x in (a64, b64, f64)]
    return fast_fmi(*edges)


def fmi_pixel(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """FMI_pixel: Fast-FMI on raw grey levels (feature 'none'); not symmetric in A and B."""
    return fast_fmi(a, b, f)

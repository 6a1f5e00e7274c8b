"""Small synthetic unit tests of the metrics library (no shared data needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionmamba_cli.metrics import (
    METRICS,
    average_gradient,
    correlation_coefficient,
    entropy,
    fast_fmi,
    fmi,
    fmi_pixel,
    load_grey,
    ms_ssim,
    mutual_information,
    psnr,
    qabf,
    score_triplet,
    sobel_edge,
    spatial_frequency,
    ssim,
    standard_deviation,
    to_grey_uint8,
    vif,
)
from fusionmamba_cli.metrics.qabf import sobel_conv_same

GOLDEN_KEYS = {"VIF", "SCD", "Qabf", "SF", "MS-SSIM", "FMI", "EN", "SD", "MI", "AG", "SSIM", "PSNR", "CC", "FMI_pixel"}


def _random_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth-ish random uint8 image (noise plus a gradient) for property tests."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) % 256
    return ((ramp + rng.integers(0, 40, shape)) % 256).astype(np.uint8)


# --- colour reduction -------------------------------------------------------------------


def test_to_grey_known_values() -> None:
    """Primaries, extremes and an exact .5 tie (rounded up, unlike PIL YCbCr / np.round)."""
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [0, 0, 250]]], np.uint8)
    assert to_grey_uint8(rgb).tolist() == [[76, 150, 29, 255, 0, 29]]


def test_to_grey_grey_rgb_is_identity() -> None:
    """R = G = B = g gives Y = g for every level."""
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(to_grey_uint8(np.stack([g, g, g], axis=-1)), g)


def test_to_grey_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        to_grey_uint8(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        to_grey_uint8(np.zeros((4, 4, 3), np.float64))


def test_load_grey_modes(tmp_path: Path) -> None:
    """Grey files load as stored; RGB, RGBA and palette images reduce through exact BT.601 Y."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 128, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "p.png")
    assert np.array_equal(load_grey(tmp_path / "g.png"), grey)
    assert np.array_equal(load_grey(tmp_path / "c.png"), to_grey_uint8(rgb))
    assert np.array_equal(load_grey(tmp_path / "a.png"), to_grey_uint8(rgb))
    palette_rgb = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    got = load_grey(tmp_path / "p.png")
    assert got.dtype == np.uint8 and got.shape == (5, 7)
    assert np.array_equal(got, to_grey_uint8(palette_rgb))


# --- F-only statistics ------------------------------------------------------------------


def test_entropy_constant_and_two_levels() -> None:
    assert entropy(np.full((8, 8), 77, np.uint8)) == 0.0
    two = np.zeros((8, 8))
    two[:, 4:] = 200
    assert entropy(two) == pytest.approx(1.0, abs=1e-15)


def test_sd_sf_ag_simple_images() -> None:
    const = np.full((6, 9), 5.0)
    assert standard_deviation(const) == 0.0
    assert spatial_frequency(const) == 0.0
    ramp = np.tile(np.arange(9.0), (6, 1))  # slope 1 along x, 0 along y
    assert spatial_frequency(ramp) == pytest.approx(1.0)
    assert average_gradient(ramp) == pytest.approx(math.sqrt(0.5))
    assert standard_deviation(np.array([[0.0, 2.0]])) == 1.0


def test_psnr_uses_max_of_fused() -> None:
    """MSE = 100 and max(F) = 100 give 10 log10(100^2 / 100) = 20 dB."""
    f = np.full((4, 4), 100.0)
    assert psnr(f - 10, f + 10, f) == pytest.approx(20.0)


def test_mutual_information_nats() -> None:
    """Two equiprobable levels shared by A, B and F: MI = 2 ln 2 (sum over sources, nats)."""
    x = np.zeros((4, 4), np.uint8)
    x[:2] = 9
    assert mutual_information(x, x, x) == pytest.approx(2 * math.log(2))
    assert mutual_information(x, x, np.full_like(x, 3)) == 0.0
    # Non-integral values are labels too (sklearn semantics).
    assert mutual_information(x + 0.5, x + 0.25, x * 0.1) == pytest.approx(2 * math.log(2))


# --- identical images -------------------------------------------------------------------


def test_identical_images() -> None:
    """A = B = F: SSIM sum 2, MS-SSIM 1, CC 1, VIF sum 2, FMI and FMI_pixel 1."""
    img = _random_image((192, 200), seed=1)
    assert ssim(img, img, img) == pytest.approx(2.0, abs=1e-12)
    assert ms_ssim(img, img, img) == pytest.approx(1.0, abs=1e-12)
    assert correlation_coefficient(img, img, img) == pytest.approx(1.0, abs=1e-12)
    assert vif(img, img, img) == pytest.approx(2.0, abs=1e-9)
    assert fmi(img, img, img) == 1.0
    assert fmi_pixel(img, img, img) == 1.0


def test_ms_ssim_size_limit() -> None:
    """MS-SSIM is None when min(H, W) <= 160 and a number above."""
    small = _random_image((160, 300), seed=2)
    assert ms_ssim(small, small, small) is None
    big = _random_image((161, 161), seed=3)
    assert ms_ssim(big, big, big) == pytest.approx(1.0)
    assert score_triplet(small, small, small, ["MS-SSIM"]) == {"MS-SSIM": None}


def test_symmetry_in_sources() -> None:
    """Every metric except FMI_pixel is symmetric in A and B (README 1)."""
    a, b = _random_image((170, 180), 4), _random_image((170, 180), 5)
    f = ((a.astype(int) + b + 1) // 2).astype(np.uint8)
    ab = score_triplet(a, b, f)
    ba = score_triplet(b, a, f)
    for key in ab:
        if key != "FMI_pixel":
            assert ab[key] == pytest.approx(ba[key], rel=1e-12, abs=1e-12), key


def test_dtype_independence() -> None:
    """uint8, int64 and float32 grey levels give the same values (computed in float64)."""
    a, b = _random_image((40, 50), 6), _random_image((40, 50), 7)
    f = np.maximum(a, b)
    keys = [k for k in METRICS if k != "MS-SSIM"]
    ref = score_triplet(a, b, f, keys)
    for dtype in (np.int64, np.float32):
        got = score_triplet(a.astype(dtype), b.astype(dtype), f.astype(dtype), keys)
        assert got == pytest.approx(ref, rel=1e-12)


# --- Qabf -------------------------------------------------------------------------------


def test_sobel_conv_same_is_true_convolution() -> None:
    """conv2 of an impulse reproduces the (unflipped) kernels, as scipy convolve2d 'same' does."""
    x = np.zeros((5, 5))
    x[2, 2] = 1
    sx, sy = sobel_conv_same(x)
    assert np.array_equal(sx[1:4, 1:4], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert np.array_equal(sy[1:4, 1:4], [[1, 2, 1], [0, 0, 0], [-1, -2, -1]])


def test_qabf_equal_strength_quirk() -> None:
    """A = B = F: gX == gF everywhere, so G_XF = gF (reference quirk), not 1."""
    img = _random_image((12, 14), 13).astype(np.float64)
    sx, sy = sobel_conv_same(img)
    g = np.sqrt(sx * sx + sy * sy)
    q = 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * (1 - 0.8)))
    assert qabf(img, img, img) == pytest.approx(np.sum(q * g) / np.sum(g), rel=1e-12)


# --- FMI --------------------------------------------------------------------------------


def test_sobel_edge_step_keeps_one_column() -> None:
    """A vertical step gives equal S on both sides; the asymmetric rule keeps the right one."""
    img = np.zeros((8, 16))
    img[:, 4:] = 100  # S = 2500 in columns 3 and 4 only; cutoff = 4 * mean(S) = 1250
    e = sobel_edge(img)
    assert e.dtype == bool
    expected = np.zeros((8, 16), bool)
    expected[:, 4] = True  # S(r,3) <= S(r,4) and S(r,4) > S(r,5); column 3 fails S(r,3) > S(r,4)
    assert np.array_equal(e, expected)


def test_sobel_edge_flat_image_has_no_edges() -> None:
    assert not sobel_edge(np.full((5, 6), 42.0)).any()


def test_fast_fmi_both_constant_rule() -> None:
    """Both windows constant but different score 1 (MATLAB numerics rule)."""
    a = np.zeros((3, 3))
    f = np.full((3, 3), 7.0)
    assert fast_fmi(a, a, f) == 1.0


def test_fast_fmi_one_constant_window_scores_zero() -> None:
    """A constant window against a non-constant one has c = 0, phi = 0 and mi = 0."""
    a = np.zeros((3, 3))
    f = np.arange(9.0).reshape(3, 3)
    assert fast_fmi(a, f, f) == pytest.approx(0.5)  # A-term 0, B-term 1 (b == f)


def test_fast_fmi_b_branch_compares_with_normalised_f() -> None:
    """README quirk: once the A-branch ran, raw b is compared with the *normalised* f window."""
    f = np.zeros((3, 3))
    f[1, 1] = 50  # a single bright pixel: its pdf is a delta, so sd = 0 and phi = 0
    other = np.zeros((3, 3))
    other[0, 2] = 50
    # A-branch runs (other != f) -> 0; f becomes 0/1, so b == raw f no longer takes the
    # shortcut and its (delta) pdf scores 0 as well.
    assert fast_fmi(other, f, f) == 0.0
    # Swapped: a == f takes the shortcut (1), f stays raw, b's delta elsewhere scores 0.
    assert fast_fmi(f, other, f) == 0.5


def test_fmi_pixel_value_range() -> None:
    a, b = _random_image((20, 24), 8), _random_image((20, 24), 9)
    f = ((a.astype(int) + b + 1) // 2).astype(np.uint8)
    for fn in (fmi, fmi_pixel):
        v = fn(a, b, f)
        assert 0.0 < v < 1.0


# --- registry ---------------------------------------------------------------------------


def test_registry_keys() -> None:
    assert set(METRICS) == GOLDEN_KEYS
    assert all(callable(fn) for fn in METRICS.values())


def test_score_triplet_subset_and_order() -> None:
    a, b = _random_image((32, 32), 10), _random_image((32, 32), 11)
    f = np.maximum(a, b)
    out = score_triplet(a, b, f, ["SD", "EN", "PSNR"])
    assert list(out) == ["SD", "EN", "PSNR"]
    assert all(isinstance(v, float) for v in out.values())
    assert out["SD"] == standard_deviation(f)


def test_unknown_metric_raises() -> None:
    a = _random_image((16, 16), 12)
    with pytest.raises(ValueError, match="valid names: .*FMI_pixel"):
        score_triplet(a, a, a, ["EN", "NOPE"])


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        score_triplet(np.zeros((8, 8)), np.zeros((8, 9)), np.zeros((8, 8)), ["CC"])
    with pytest.raises(ValueError):
        entropy(np.zeros((2, 2, 3)))

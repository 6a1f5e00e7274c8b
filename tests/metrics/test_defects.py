"""Defect figures clip, grain, grid: known cases, and parity with ``shared/tools/artefacts.py``
(the reference of issue 15) on generated images and on real test pairs when ../shared is present."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from fusionmamba_cli.metrics import (
    DEFECT_KEYS,
    METRIC_KEYS,
    clip_fraction,
    defect_figures,
    grain_ratio,
    grain_sigma,
    grid_ratio,
    load_grey,
    periodic_peak,
    score_triplet,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "tools" / "artefacts.py"
DATA = SHARED / "data"


def _smooth(shape: tuple[int, int], seed: int, noise: float = 0.0) -> np.ndarray:
    """A smooth random grey image 0..255 (blurred noise plus a ramp), optionally with white noise."""
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.normal(0, 1, shape), (0, 0), 6)
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    ramp = np.add.outer(np.arange(shape[0]) / shape[0], np.arange(shape[1]) / shape[1]) / 2
    img = 30 + 150 * field + 60 * ramp + rng.normal(0, noise, shape)
    return np.clip(np.round(img), 0, 255)


def _periodic(shape: tuple[int, int], period: float, amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return amplitude * (np.cos(2 * np.pi * xx / period) + np.cos(2 * np.pi * yy / period))


# --- self-contained -----------------------------------------------------------------------


def test_copy_of_the_noisier_source_has_grain_one_and_no_clip() -> None:
    a, b = _smooth((96, 128), 0, noise=4.0), _smooth((96, 128), 1, noise=1.0)
    figs = defect_figures(a, b, a)
    assert figs["grain"] == pytest.approx(1.0, rel=1e-12)
    assert figs["clip"] == 0.0
    assert figs["grid"] <= 1.0 + 1e-12  # F's periodic peak is A's, the denominator at least that
    assert grain_ratio(a, b, b) < 0.6  # the cleaner source, measured against the noisier one


def test_grain_sigma_is_immerkaer_noise_sigma() -> None:
    """Zero on a plane (the mask annihilates it), sigma for white Gaussian noise."""
    yy, xx = np.mgrid[0:64, 0:80]
    assert grain_sigma(3.0 * xx + 2.0 * yy + 7) == pytest.approx(0.0, abs=1e-12)
    noise = np.random.default_rng(3).normal(128, 5.0, (256, 256))
    assert grain_sigma(noise) == pytest.approx(5.0, rel=0.02)
    a, b = _smooth((128, 128), 4), _smooth((128, 128), 5)
    noisy = a + np.random.default_rng(6).normal(0, 8.0, a.shape)
    assert grain_ratio(a, b, noisy) > 5.0


def test_blown_and_crushed_pixels_give_the_expected_clip() -> None:
    a = np.full((40, 50), 100.0)
    a[:10] = 250.0  # rows 0-9 already bright in A: F's 255 there is not a defect
    b = np.full((40, 50), 10.0)
    f = np.full((40, 50), 255.0)
    assert clip_fraction(a, b, f) == pytest.approx(30 / 40)
    f[30:, :25] = 0.0  # crushed where max(A, B) = 100 > 16: still a defect, as a shadow
    assert clip_fraction(a, b, f) == pytest.approx(30 / 40)
    dark = np.full((40, 50), 12.0)  # both sources at or below 16: F = 0 is not counted
    assert clip_fraction(dark, dark, np.zeros((40, 50))) == 0.0
    assert clip_fraction(a, b, np.clip(a, 0, 254)) == 0.0


@pytest.mark.parametrize("period", [4, 8])
def test_periodic_texture_gives_a_large_grid_figure(period: int) -> None:
    shape = (160, 192)
    a, b = _smooth(shape, 7, noise=1.0), _smooth(shape, 8, noise=1.0)
    average = np.round((a + b) / 2)
    assert grid_ratio(a, b, average) < 2.5
    textured = np.clip(average + np.round(_periodic(shape, period, 3.0)), 0, 255)
    assert grid_ratio(a, b, textured) > 50.0
    # a 5-px texture lies on none of the measured bins (2, 4, 8, 16 px and their +-3 neighbours)
    off = np.clip(average + np.round(_periodic(shape, 5, 3.0)), 0, 255)
    assert grid_ratio(a, b, off) < 2.5


def test_figures_are_symmetric_and_dtype_independent() -> None:
    a, b = _smooth((50, 70), 9, noise=2.0), _smooth((50, 70), 10, noise=3.0)
    f = np.clip(np.maximum(a, b) * 1.3, 0, 255).round()
    ref = defect_figures(a, b, f)
    assert defect_figures(b, a, f) == pytest.approx(ref, rel=1e-12)
    got = defect_figures(a.astype(np.uint8), b.astype(np.int64), f.astype(np.float32))
    assert got == pytest.approx(ref, rel=1e-12)
    assert list(ref) == list(DEFECT_KEYS)


def test_score_triplet_computes_them_only_when_named() -> None:
    a, b = _smooth((40, 40), 11), _smooth((40, 40), 12)
    f = np.maximum(a, b)
    assert list(score_triplet(a, b, f)) == list(METRIC_KEYS)
    assert score_triplet(a, b, f, ["grid", "clip", "grain"]) == {k: defect_figures(a, b, f)[k] for k in ("grid", "clip", "grain")}


def test_tiny_images() -> None:
    x = np.arange(10.0).reshape(2, 5)
    assert grain_sigma(x) is None and grain_ratio(x, x, x) is None
    assert defect_figures(x, x, x)["grid"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        defect_figures(x, x, x[:, :4])


# --- parity with the reference ------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not available (the ../shared folder is absent)")
    spec = importlib.util.spec_from_file_location("artefacts_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_matches(ref: dict, got: dict, what: str) -> None:
    assert list(got) == list(ref), what
    assert abs(got["clip"] - ref["clip"]) <= 1e-6, what
    for key in ("grain", "grid"):
        assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=0), f"{what}: {key}"


def _fusions(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """max, average, and noisy+clipped and periodic synthetic fusions (all integer grey levels)."""
    rng = np.random.default_rng(seed)
    top = np.maximum(a, b)
    return {
        "max": top,
        "average": np.floor((a + b + 1) / 2),
        "noisy-clipped": np.clip(np.round(1.5 * top - 20 + rng.normal(0, 6, a.shape)), 0, 255),
        "periodic": np.clip(np.round((a + b) / 2 + _periodic(a.shape, 4, 4.0) + _periodic(a.shape, 16, 2.0)), 0, 255),
    }


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (161, 200), (120, 90)])
def test_matches_the_reference_on_generated_images(reference, shape) -> None:
    seed = shape[0] * 1000 + shape[1]
    a, b = _smooth(shape, seed, noise=2.0), _smooth(shape, seed + 1, noise=5.0)
    b[: shape[0] // 3] = 250  # a bright band in one source (clip must not count it)
    for name, f in _fusions(a, b, seed).items():
        _assert_matches(reference.figures(a, b, f), defect_figures(a, b, f), f"{shape} {name}")


# (task, first modality, second modality, image stems): grey, colour, odd sizes, gfp_pc.
REAL_PAIRS = [
    ("ct_mri", "ct", "mri", ["37010"]),
    ("pet_mri", "mri", "pet", None),
    ("spect_mri", "mri", "spect", None),
    ("ir_vis", "ir", "vis", None),
    ("gfp_pc", "gfp", "pc", None),
]


@pytest.mark.parametrize("task,first,second,stems", REAL_PAIRS, ids=[t for t, *_ in REAL_PAIRS])
def test_matches_the_reference_on_real_test_pairs(reference, task, first, second, stems) -> None:
    folder = DATA / task / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    files = sorted((folder / first).glob("*.png"))
    # the first file, and for ir_vis the smallest and an odd-sized colour pair too
    chosen = [p for p in files if p.stem in stems] if stems else files[:1]
    if task == "ir_vis":
        sizes = {p: load_grey(p).shape for p in files}
        chosen += [min(files, key=lambda p: sizes[p][0] * sizes[p][1])]
        chosen += [next(p for p in files if sizes[p][1] % 2)]
    assert chosen
    for path in chosen:
        pa, pb = path, folder / second / path.name
        a, b = load_grey(pa).astype(np.float64), load_grey(pb).astype(np.float64)
        assert np.array_equal(a, reference.grey(pa)) and np.array_equal(b, reference.grey(pb))
        for name, f in _fusions(a, b, int(path.stem) if path.stem.isdigit() else 0).items():
            _assert_matches(reference.figures(a, b, f), defect_figures(a, b, f), f"{task}/{path.stem} {name}")


def test_periodic_peak_and_grain_sigma_match_the_reference_parts(reference) -> None:
    x = _smooth((70, 90), 21, noise=3.0) + np.round(_periodic((70, 90), 8, 2.0))
    assert periodic_peak(x) == pytest.approx(reference.periodic_peak(x), rel=1e-12)
    assert grain_sigma(x) == pytest.approx(reference.grain_sigma(x), rel=1e-12)

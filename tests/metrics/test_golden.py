"""Golden-value tests: every entry of shared/metrics/golden.json, every metric, README tolerance.

The data live outside the repo (``../shared`` relative to the repo root); the tests skip with a
reason when they are absent. Nothing from there is copied into the repository.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, Optional

from pathlib import Path

import numpy as np
import pytest

from fusionmamba_cli.metrics import METRICS, fmi, fmi_pixel, load_grey, score_triplet

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
DATA_DIR = SHARED / "data"
METRICS_DIR = SHARED / "metrics"
GOLDEN_PATH = METRICS_DIR / "golden.json"

_SKIP_REASON = (
    f"golden data not found at {GOLDEN_PATH.resolve()} / {DATA_DIR.resolve()} "
    "(expected ../shared next to the repo root)"
)


def _load_golden() -> Optional[dict[str, Any]]:
    """golden.json as a dict, or None when the shared data are not present."""
    if not GOLDEN_PATH.is_file() or not DATA_DIR.is_dir():
        return None
    return json.loads(GOLDEN_PATH.read_text())


GOLDEN = _load_golden()
ENTRIES: dict[str, dict[str, Any]] = {e["id"]: e for e in GOLDEN["entries"]} if GOLDEN else {}
ENTRY_IDS = list(ENTRIES) or ["<golden data missing>"]
METRIC_KEYS = list(GOLDEN["metric_keys"]) if GOLDEN else list(METRICS)


def _entry(entry_id: str) -> dict[str, Any]:
    """The golden entry, or skip the test when the shared data are absent."""
    if entry_id not in ENTRIES:
        pytest.skip(_SKIP_REASON)
    return ENTRIES[entry_id]


def _tolerance(key: str, golden: float) -> float:
    """README 4: |got - golden| <= abs + rel * |golden| (MS-SSIM rel 1e-5)."""
    tol = GOLDEN["tolerance"] if GOLDEN else {"abs": 1e-9, "rel": 1e-6, "rel_overrides": {}}
    rel = tol.get("rel_overrides", {}).get(key, tol["rel"])
    return tol["abs"] + rel * abs(golden)


def _sha256(img: np.ndarray) -> str:
    """SHA-256 of a uint8 array in C order (README 1)."""
    return hashlib.sha256(np.ascontiguousarray(img, dtype=np.uint8).tobytes()).hexdigest()


@lru_cache(maxsize=None)
def _triple(entry_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A, B (uint8 Y) and F (uint8) of an entry, built as README section 2 prescribes."""
    e = ENTRIES[entry_id]
    a = load_grey(DATA_DIR / e["A"]["path"])
    b = load_grey(DATA_DIR / e["B"]["path"])
    method = e["fusion_method"]
    if method == "average":
        f = ((a.astype(int) + b + 1) // 2).astype(np.uint8)  # round half up, not np.round
    elif method == "max":
        f = np.maximum(a, b)
    elif method == "ifcnn_max":
        f = load_grey(METRICS_DIR / e["fused_png"])
    else:
        raise AssertionError(f"unknown fusion_method {method!r}")
    return a, b, f


def _crop(entry_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fmi_crop box of A, B and F (F fused at full size, then cropped)."""
    box = ENTRIES[entry_id]["fmi_crop"]["box"]
    rows = slice(box["y0"], box["y0"] + box["h"])
    cols = slice(box["x0"], box["x0"] + box["w"])
    a, b, f = _triple(entry_id)
    return a[rows, cols], b[rows, cols], f[rows, cols]


def _assert_close(key: str, got: Optional[float], golden: Optional[float]) -> None:
    """Compare one value with its golden under the README tolerance (None must stay None)."""
    if golden is None:
        assert got is None, f"{key}: expected None (not available), got {got!r}"
        return
    assert got is not None, f"{key}: got None, expected {golden!r}"
    err = abs(got - golden)
    assert err <= _tolerance(key, golden), (
        f"{key}: got {got!r}, golden {golden!r}, |diff| {err:.3e}, rel {err / max(abs(golden), 1e-300):.3e}"
    )


@pytest.mark.parametrize("entry_id", ENTRY_IDS)
def test_inputs_match_hashes(entry_id: str) -> None:
    """Y conversion of A and B, and the fused F, reproduce the golden SHA-256 and sums."""
    e = _entry(entry_id)
    a, b, f = _triple(entry_id)
    assert list(a.shape) == e["shape_hw"] and a.shape == b.shape == f.shape
    assert _sha256(a) == e["A"]["sha256_Y_uint8"], "A: Y conversion differs"
    assert _sha256(b) == e["B"]["sha256_Y_uint8"], "B: Y conversion differs"
    assert _sha256(f) == e["F_sha256_uint8"], f"F ({e['fusion_method']}) differs"
    sums = e["sums"]
    assert (int(a.sum()), int(b.sum()), int(f.sum())) == (sums["A_sum"], sums["B_sum"], sums["F_sum"])


@pytest.mark.parametrize("key", METRIC_KEYS)
@pytest.mark.parametrize("entry_id", ENTRY_IDS)
def test_full_image_metric(entry_id: str, key: str) -> None:
    """Every full-image metric of every entry matches golden.json."""
    e = _entry(entry_id)
    a, b, f = _triple(entry_id)
    _assert_close(key, METRICS[key](a, b, f), e["metrics"][key])


@pytest.mark.parametrize("key", ["FMI", "FMI_pixel"])
@pytest.mark.parametrize("entry_id", ENTRY_IDS)
def test_fmi_crop(entry_id: str, key: str) -> None:
    """FMI and FMI_pixel on the 64x64 crop match the Octave analysis_fmi.m values."""
    e = _entry(entry_id)
    fn = fmi if key == "FMI" else fmi_pixel
    _assert_close(key, fn(*_crop(entry_id)), e["fmi_crop"][key])


# The swapped-order check runs on the 256x256 entries only, to keep the suite fast.
SMALL_ENTRY_IDS = [i for i, e in ENTRIES.items() if e["shape_hw"] == [256, 256]] or ENTRY_IDS


@pytest.mark.parametrize("entry_id", SMALL_ENTRY_IDS)
def test_fmi_pixel_swapped_sources(entry_id: str) -> None:
    """FMI_pixel with A and B swapped matches extras (the B-branch quirk makes it asymmetric)."""
    e = _entry(entry_id)
    a, b, f = _triple(entry_id)
    _assert_close("FMI_pixel", fmi_pixel(b, a, f), e["extras"]["FMI_pixel_swapped_AB"])


def test_score_triplet_on_golden_entry() -> None:
    """score_triplet returns all 14 golden keys, in registry order, matching a 256x256 entry."""
    entry_id = next((i for i, e in ENTRIES.items() if e["shape_hw"] == [256, 256]), None)
    if entry_id is None:
        pytest.skip(_SKIP_REASON)
    scores = score_triplet(*_triple(entry_id))
    assert list(scores) == list(METRICS) and set(scores) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        _assert_close(key, scores[key], ENTRIES[entry_id]["metrics"][key])

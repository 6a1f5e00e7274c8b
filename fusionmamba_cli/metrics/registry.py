"""Metric registry: golden key -> function(a, b, f), the defect figures beside them, and
``score_triplet``.

Convention: A, B, F are 2-D grey-level arrays 0..255 (any numeric dtype), computed in float64.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .defects import DEFECT_KEYS, clip_fraction, grain_ratio, grid_ratio
from .fmi import fmi, fmi_pixel
from .grey import check_triplet
from .qabf import qabf
from .ssim import ms_ssim, ssim
from .statistics import (
    average_gradient,
    correlation_coefficient,
    entropy,
    mutual_information,
    psnr,
    scd,
    spatial_frequency,
    standard_deviation,
)
from .vif import vif

__all__ = ["METRICS", "METRIC_KEYS", "DEFECTS", "DEFECT_KEYS", "SCORE_KEYS", "score_triplet"]

MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Optional[float]]


def _fused_only(fn: Callable[[np.ndarray], float]) -> MetricFn:
    """Wrap an F-only metric so that it takes (a, b, f) like the others."""

    def wrapped(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
        return fn(f)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


# Golden keys, in the FusionMamba paper's column order with FMI_pixel (feature 'none') last.
METRICS: dict[str, MetricFn] = {
    "VIF": vif,
    "SCD": scd,
    "Qabf": qabf,
    "SF": _fused_only(spatial_frequency),
    "MS-SSIM": ms_ssim,
    "FMI": fmi,
    "EN": _fused_only(entropy),
    "SD": _fused_only(standard_deviation),
    "MI": mutual_information,
    "AG": _fused_only(average_gradient),
    "SSIM": ssim,
    "PSNR": psnr,
    "CC": correlation_coefficient,
    "FMI_pixel": fmi_pixel,
}
METRIC_KEYS: tuple[str, ...] = tuple(METRICS)

# Visible-defect figures (issue 15, ``shared/tools/artefacts.py``): not golden metrics and not
# higher-better; ``score_triplet`` computes them only when asked by name.
DEFECTS: dict[str, MetricFn] = {"clip": clip_fraction, "grain": grain_ratio, "grid": grid_ratio}
SCORE_KEYS: tuple[str, ...] = METRIC_KEYS + DEFECT_KEYS
_SCORERS: dict[str, MetricFn] = {**METRICS, **DEFECTS}


def _resolve(metrics: Optional[Sequence[str]]) -> list[str]:
    """Validate requested names (the 14 metrics by default; defect figures by name); unknown names
    raise ValueError."""
    if metrics is None:
        return list(METRIC_KEYS)
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in _SCORERS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid names: {', '.join(SCORE_KEYS)}")
    return list(metrics)


def score_triplet(
    a: np.ndarray, b: np.ndarray, f: np.ndarray, metrics: Optional[Sequence[str]] = None
) -> dict[str, Optional[float]]:
    """Compute the requested metrics (the 14 metrics by default; ``clip``, ``grain``, ``grid`` when
    named) for sources A, B and fused F."""
    names = _resolve(metrics)
    a64, b64, f64 = check_triplet(a, b, f)
    out: dict[str, Optional[float]] = {}
    for name in names:
        value = _SCORERS[name](a64, b64, f64)
        out[name] = None if value is None else float(value)
    return out

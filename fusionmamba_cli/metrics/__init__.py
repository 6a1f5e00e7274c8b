"""Image-fusion metrics (14 golden keys) reproducing ``shared/metrics/README.md``, and the three
visible-defect figures of ``shared/tools/artefacts.py`` (``clip``, ``grain``, ``grid``).

Convention: A, B (sources) and F (fused) are 2-D arrays of grey levels 0..255 of any numeric
dtype; every metric computes in float64. Colour images are reduced with ``to_grey_uint8``.
"""

from .defects import clip_fraction, defect_figures, grain_ratio, grain_sigma, grid_ratio, periodic_peak
from .fmi import fast_fmi, fmi, fmi_pixel, sobel_edge
from .grey import load_grey, to_grey_uint8
from .qabf import qabf
from .registry import DEFECT_KEYS, DEFECTS, METRIC_KEYS, METRICS, SCORE_KEYS, score_triplet
from .ssim import ms_ssim, ms_ssim_pair, ssim, ssim_pair
from .statistics import (
    average_gradient,
    correlation_coefficient,
    entropy,
    mse,
    mutual_information,
    mutual_information_pair,
    psnr,
    scd,
    spatial_frequency,
    standard_deviation,
)
from .vif import vif, vifp

__all__ = [
    "METRICS",
    "METRIC_KEYS",
    "score_triplet",
    "DEFECTS",
    "DEFECT_KEYS",
    "SCORE_KEYS",
    "defect_figures",
    "clip_fraction",
    "grain_ratio",
    "grain_sigma",
    "grid_ratio",
    "periodic_peak",
    "to_grey_uint8",
    "load_grey",
    "vif",
    "vifp",
    "scd",
    "qabf",
    "spatial_frequency",
    "ms_ssim",
    "ms_ssim_pair",
    "fmi",
    "fmi_pixel",
    "fast_fmi",
    "sobel_edge",
    "entropy",
    "standard_deviation",
    "mutual_information",
    "mutual_information_pair",
    "average_gradient",
    "ssim",
    "ssim_pair",
    "psnr",
    "mse",
    "correlation_coefficient",
]

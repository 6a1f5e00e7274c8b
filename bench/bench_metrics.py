"""Time every fusion metric on one thread: median ms per metric on a 256x256 and a 450x620 triple.

Uses the README section 5 images (ct_mri/test/37010 and ir_vis/test/tno_17, IFCNN-MAX fused) from
``../shared`` next to the repo root; falls back to synthetic images of the same sizes if absent.
Run from the repo root:  python3 bench/bench_metrics.py [--repeats 5] [--clock wall|cpu] [--metrics EN SD ...]
(``--clock cpu`` times process CPU seconds, which is steadier than wall time on a shared machine.)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread, set before numpy loads its BLAS

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fusionmamba_cli.metrics import METRICS, load_grey  # noqa: E402

SHARED = REPO_ROOT / ".." / "shared"
CASES = {
    "256x256": ("ct_mri/test/ct/37010.png", "ct_mri/test/mri/37010.png", "ct_mri__test__37010__ifcnn_max.png", (256, 256)),
    "450x620": ("ir_vis/test/ir/tno_17.png", "ir_vis/test/vis/tno_17.png", "ir_vis__test__tno_17__ifcnn_max.png", (450, 620)),
}


def _single_thread() -> None:
    """Pin OpenCV and torch (if installed) to one thread."""
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _synthetic(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth random uint8 image used when the shared data are missing."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 40, shape)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 4 + 110, 0, 255).astype(np.uint8)


def load_case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A, B, F and a description of where they came from."""
    a_rel, b_rel, f_rel, shape = CASES[name]
    data, fused = SHARED / "data", SHARED / "metrics" / "fused"
    if (data / a_rel).is_file() and (data / b_rel).is_file() and (fused / f_rel).is_file():
        return load_grey(data / a_rel), load_grey(data / b_rel), load_grey(fused / f_rel), f_rel
    a, b = _synthetic(shape, 1), _synthetic(shape, 2)
    return a, b, np.maximum(a, b), "synthetic (shared data not found)"


def median_ms(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn`` in ms over ``repeats`` runs, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def main(argv: Optional[list[str]] = None) -> None:
    """Print a per-metric timing table (median ms) for both image sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metrics", nargs="*", default=list(METRICS), choices=list(METRICS))
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    _single_thread()

    cases = {name: load_case(name) for name in CASES}
    print(f"# median of {args.repeats} runs, {args.clock} clock, 1 thread, {os.cpu_count()} CPUs visible")
    for name, (_, _, _, src) in cases.items():
        print(f"# {name}: {src}")
    table: dict[str, dict[str, float]] = {}
    for key in args.metrics:
        table[key] = {}
        for name, (a, b, f, _) in cases.items():
            a64, b64, f64 = (x.astype(np.float64) for x in (a, b, f))
            table[key][name] = median_ms(lambda: METRICS[key](a64, b64, f64), args.repeats, clock)
    print(f"{'metric':<10}" + "".join(f"{name:>12}" for name in CASES))
    for key, row in table.items():
        print(f"{key:<10}" + "".join(f"{row[name]:>10.1f}ms" for name in CASES))
    totals = {name: sum(row[name] for row in table.values()) for name in CASES}
    print(f"{'total':<10}" + "".join(f"{totals[name]:>10.1f}ms" for name in CASES))


if __name__ == "__main__":
    main()

"""`fuse` on the CPU's fast path (the numba scan, time-major, with the fused kernels and OpenCV blurs)
writes the stock-torch image (the torch scan, `FUSIONMAMBA_CPU_KERNELS=0`) to within one grey level,
on the real test splits of every task (../shared/data; skipped without it).

CI checks the smallest pair of each task (CI-fast: the torch scan is the slow side);
FUSIONMAMBA_REAL_DATA_PAIRS=all (or a number) checks more.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fusionmamba_cli import load_model
from fusionmamba_cli.fusion.pipeline import Fuser
from fusionmamba_cli.imaging.io import read_image, to_integer
from fusionmamba_cli.ops.fused import ENV_VAR as KERNELS_VAR
from fusionmamba_cli.tasks import TASKS
from tests.conftest import shared_path

pytest.importorskip("numba")


def _pairs_to_check() -> int | None:
    value = os.environ.get("FUSIONMAMBA_REAL_DATA_PAIRS", "1").strip().lower()
    return None if value == "all" else int(value)


def smallest_pairs(folder, count: int | None) -> list[str]:
    """Names of the `count` smallest images in a folder (by pixels, then name); None: all of them."""
    def pixels(path) -> int:
        with Image.open(path) as image:  # reads the header only
            return image.size[0] * image.size[1]

    return [p.name for p in sorted(folder.glob("*.png"), key=lambda p: (pixels(p), p.name))][:count]


def grey_level_difference(task: str, names: list[str], root) -> int:
    """Largest |fast path - stock torch| over the written 8-bit images of these pairs."""
    model = load_model(f"compact-{task}", device="cpu")
    first_dir, second_dir = (root / task / "test" / modality for modality in TASKS[task].modalities)
    worst = 0
    previous = os.environ.get(KERNELS_VAR)
    try:
        for name in names:
            first, second = read_image(first_dir / name), read_image(second_dir / name)
            written = []
            for backend, kernels in (("numba", "1"), ("torch", "0")):
                model.set_scan_backend(backend)
                os.environ[KERNELS_VAR] = kernels
                fused = Fuser(model, task=task, device="cpu").fuse(first, second)
                written.append(to_integer(fused.pixels, 8).astype(np.int16))
            worst = max(worst, int(np.abs(written[0] - written[1]).max()))
    finally:
        if previous is None:
            os.environ.pop(KERNELS_VAR, None)
        else:
            os.environ[KERNELS_VAR] = previous
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_numba_fuse_equals_torch_fuse_to_one_grey_level(task):
    root = shared_path("data")
    first_dir = root / task / "test" / TASKS[task].modalities[0]
    names = smallest_pairs(first_dir, _pairs_to_check())
    assert names, f"no test pairs under {first_dir}"
    assert grey_level_difference(task, names, root) <= 1

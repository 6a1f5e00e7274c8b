"""Every weights file the manifest lists as bundled: right sha256, loads strictly, fuses a small
pair to a finite image in [0, 1]; every task has a default that resolves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionmamba_cli import load_model
from fusionmamba_cli.checkpoints import bundled_weights_dir, default_weights_for
from fusionmamba_cli.checkpoints.manifest import sha256_of
from fusionmamba_cli.fusion import fuse_images
from fusionmamba_cli.tasks import TASK_NAMES
from tests.conftest import smooth_image

MANIFEST = bundled_weights_dir() / "manifest.json"
ENTRIES = json.loads(MANIFEST.read_text())["weights"] if MANIFEST.is_file() else []


def test_manifest_is_present_and_names_every_task():
    assert ENTRIES, f"{MANIFEST} missing or empty"
    for task in TASK_NAMES:
        assert default_weights_for(task) in {e["name"] for e in ENTRIES}
    assert default_weights_for(None) in {e["name"] for e in ENTRIES}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_bundled_weights_verify_load_and_fuse(entry):
    path = bundled_weights_dir() / entry["file"]
    assert path.stat().st_size == entry["size"] and path.stat().st_size < 50 * 2**20
    assert sha256_of(path) == entry["sha256"]
    model = load_model(entry["name"])  # strict load by name, sha256-checked again
    assert model.config.dims == (16, 32, 64, 128)
    task = entry["tasks"][0]
    colour = task in ("pet_mri", "spect_mri", "gfp_pc")
    first = smooth_image(37, 53, seed=1, channels=3 if task == "gfp_pc" else None)
    second = smooth_image(37, 53, seed=2, channels=3 if colour and task != "gfp_pc" else None)
    fused = fuse_images(model, first, second, task=task)
    assert fused.shape[:2] == (37, 53) and (fused.ndim == 3) == colour
    assert np.isfinite(fused).all() and fused.min() >= 0.0 and fused.max() <= 1.0

"""Shared test fixtures: paths to ../shared, tiny random weights, small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter. The switch must be set before anything
# imports triton (a test module setting it later would see kernels compiled for the GPU path).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (the ../shared folder is absent)")
    return path


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory) -> Path:
    """A randomly initialised `micro` network saved as our safetensors format."""
    from fusionmamba_cli import create_model, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "micro.safetensors"
    save_weights(create_model("micro"), path)
    return path


def smooth_image(height: int, width: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    """A smooth random test image in [0, 1], (H, W) or (H, W, C)."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    base = rng.random(shape).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    ramp = (0.5 + 0.5 * np.sin(6 * xx + 3 * yy)).astype(np.float32)
    if channels is not None:
        ramp = ramp[..., None]
    return np.clip(0.6 * ramp + 0.4 * base, 0, 1)


@pytest.fixture(autouse=True)
def _scan_backend_default_read_afresh():
    """Each test sees its own FUSIONMAMBA_SCAN_BACKEND: the library reads it once per process, so
    the remembered value is forgotten around every test."""
    import importlib

    dispatch = importlib.import_module("fusionmamba_cli.ops.selective_scan")  # the module, not the function
    dispatch._env_default.clear()
    yield
    dispatch._env_default.clear()

"""Helpers shared by the CLI and fusion tests: run the CLI in-process, write small test images."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import smooth_image


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run_cli(capsys, *args: object) -> CliResult:
    """`fusionmamba ARGS` in this process through the real entry point (exit-code mapping included)."""
    from fusionmamba_cli.cli.app import main

    capsys.readouterr()
    argv = ["fusionmamba", *(os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args)]
    code = 0
    with mock.patch.object(sys, "argv", argv):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def save_grey(path: Path | str, height: int, width: int, seed: int = 0, bits: int = 8, scale: float = 1.0) -> Path:
    """A smooth grey PNG/TIFF (8- or 16-bit) written with Pillow (independent of our writer).
    `scale` < 1 keeps it dark, so that a random network's 2*x1 + 2*x2 skip sum does not clip."""
    pixels = smooth_image(height, width, seed) * scale
    if bits == 16:
        Image.fromarray((pixels * 65535).round().astype(np.uint16)).save(path)
    else:
        Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return Path(os.fsdecode(path))


def save_rgb(path: Path | str, height: int, width: int, seed: int = 0, scale: float = 1.0) -> Path:
    pixels = smooth_image(height, width, seed, channels=3) * scale
    Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB").save(path)
    return Path(os.fsdecode(path))


def temp_files(directory: Path) -> list[Path]:
    """Leftover temp files of atomic writes (`.*.part`) anywhere under `directory`."""
    return [p for p in Path(directory).rglob("*") if p.name.startswith(".") and p.name.endswith(".part")]


def read_back(path: Path) -> np.ndarray:
    """An output as written (uint8/uint16, RGB order for colour), decoded by OpenCV."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable image"
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one intra-op thread: the tiny test networks are dominated by per-op
    overhead, and on a shared 2-core machine two spinning threads per process are many times slower.
    Import it into a test module to use it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Every command line of README.md's ```bash blocks runs as written (in a scratch folder laid out
like the README's: small generated images under the names it uses, ../shared/data a generated
data root), or is listed in SKIPPED with the reason it cannot run here. So the README cannot drift
from the tool: a changed option breaks this test, and a new line must run or say why not."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.helpers import one_thread, run_cli  # noqa: F401 - one_thread: autouse fixture
from tests.conftest import REPO, smooth_image

README = REPO / "README.md"

# Lines that cannot run in CI, with the reason (matched exactly against the README's line).
SKIPPED = {
    'pip install "torch==2.13.0" -e ".[test]"    # install (CPU build of PyTorch; drop the pin on a CUDA machine)':
        "installs packages (network)",
    "python -m pytest -q                           # run the tests": "runs this very test suite",
    "torchrun --nproc-per-node 2 -m fusionmamba_cli fuse ir/ vis/ -o out/ --task ir_vis   # one process per GPU":
        "several processes (tests/fusion/test_distributed.py runs fuse under torchrun)",
    "torchrun --nproc-per-node 4 -m fusionmamba_cli train --task ir_vis --out runs/irvis --steps 20000  # DDP":
        "4 processes, 20000 steps (tests/training/test_training.py runs 2-rank DDP)",
    "fusionmamba download-weights                      # the default weights (or NAME ..., or --all)":
        "network (the Hub repository; tests/checkpoints/test_hub_download.py uses a fake hub)",
    "fusionmamba download-weights NAME --revision v1.0 --cache-dir /data/hf": "network, and NAME is a placeholder",
    "fusionmamba benchmark --preset compact --size 256 --size 512 --size 1024 --size 2048":
        "2048x2048 needs ~5 GB and minutes on a CPU (tests/benchmarking runs the same options at small sizes)",
    "fusionmamba benchmark --weights compact-ir_vis --device cuda --dtype bf16 --batch 8 --json": "needs a CUDA GPU",
}

# Training lines run as written but scaled down (steps, batch, crop) so they take seconds on a CPU.
SCALED = [
    (r"--steps 3000\b", "--steps 2"),
    (r"--steps 6000\b", "--steps 3"),  # the --resume line: continues the 2-step run by one step
    (r"--steps 1000\b", "--steps 1"),
    (r"--batch-size 12\b", "--batch-size 2"),
    (r"--crop 192\b", "--crop 32"),
]


def bash_lines(text: str) -> list[str]:
    """The non-empty lines of every ```bash block, in order."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside and line.strip() == "```bash"
            continue
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)


def _split(root: Path, task: str, split: str, modalities: tuple[str, str], colour: str | None, n: int, size: int) -> None:
    for i in range(n):
        for k, modality in enumerate(modalities):
            channels = 3 if modality == colour else None
            _save(root / task / split / modality / f"{i:02d}.png", smooth_image(size, size, 10 * k + i, channels=channels))


def _scratch(base: Path) -> Path:
    """A working folder with the README's inputs, and ../shared/data (also ./data) generated."""
    work = base / "work"
    data = base / "shared" / "data"
    _split(data, "ct_mri", "test", ("ct", "mri"), None, 2, 48)
    _split(data, "ct_mri", "train", ("ct", "mri"), None, 2, 48)
    _split(data, "pet_mri", "test", ("mri", "pet"), "pet", 2, 48)
    _split(data, "ir_vis", "test", ("ir", "vis"), "vis", 2, 48)
    _split(data, "ir_vis", "train", ("ir", "vis"), "vis", 2, 48)
    _split(data, "gfp_pc", "train", ("gfp", "pc"), "gfp", 2, 48)
    work.mkdir()
    (work / "data").symlink_to(data)
    _save(work / "ir.png", smooth_image(40, 56, 1))
    _save(work / "vis.png", smooth_image(40, 56, 2, channels=3))
    _save(work / "ir.tif", smooth_image(40, 56, 3))
    _save(work / "vis.tif", smooth_image(40, 56, 4))
    for name in ("a", "b"):
        _save(work / "mri" / f"{name}.png", smooth_image(32, 32, 5))
        _save(work / "pet" / f"{name}.png", smooth_image(32, 32, 6, channels=3))
        _save(work / "ir" / f"{name}.png", smooth_image(32, 40, 7))
        _save(work / "vis" / f"{name}.png", smooth_image(32, 40, 8))
    for method, weight in (("ifcnn", 0.3), ("ours", 0.5), ("avg", 0.7)):  # fused folders for the ir_vis test split
        for name in ("00", "01"):
            ir = np.asarray(Image.open(data / "ir_vis/test/ir" / f"{name}.png"), np.float32) / 255
            vis = np.asarray(Image.open(data / "ir_vis/test/vis" / f"{name}.png").convert("L"), np.float32) / 255
            _save(work / "results" / method / f"{name}.png", weight * ir + (1 - weight) * vis)
    from fusionmamba_cli import create_model

    torch.manual_seed(0)
    torch.save(create_model("official-tiny").state_dict(), work / "fusion_model.pth")  # as the authors' code saves it
    return work


def _fusionmamba_on_path(base: Path) -> Path:
    """A `fusionmamba` command that runs this tree's package with this interpreter."""
    bin_dir = base / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fusionmamba"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fusionmamba_cli "$@"\n')
    script.chmod(0o755)
    return bin_dir


def test_readme_lines_are_all_run_or_skipped_with_a_reason():
    lines = bash_lines(README.read_text())
    assert len(lines) > 15
    stale = [line for line in SKIPPED if line not in lines]
    assert stale == [], f"SKIPPED names lines the README no longer has: {stale}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_readme_commands_run(tmp_path, capsys, monkeypatch):
    """Plain `fusionmamba ...` lines run in this process through the real entry point (no interpreter
    start per line); lines with a pipe run in bash with a `fusionmamba` command on PATH."""
    work = _scratch(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.delenv("FUSIONMAMBA_DATA", raising=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{_fusionmamba_on_path(tmp_path)}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    ran = []
    for line in bash_lines(README.read_text()):
        if line in SKIPPED:
            continue
        command = line
        for pattern, replacement in SCALED:
            command = re.sub(pattern, replacement, command)
        words = shlex.split(command, comments=True)
        if words[0] == "fusionmamba" and not set("|;&<>") & set(command.split("#")[0]):
            result = run_cli(capsys, *words[1:])
            code, err = result.code, result.err
        else:
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=600)
            code, err = proc.returncode, proc.stderr
        assert code == 0, f"README line failed ({code}): {line}\n{err[-3000:]}"
        assert "Traceback" not in err, f"{line}\n{err[-3000:]}"
        ran.append(line)
    assert any(line.startswith("fusionmamba evaluate") for line in ran)
    assert (work / "fused.png").is_file() and (work / "fused.tif").is_file()
    assert sorted(p.name for p in (work / "sheets").iterdir()) == ["00.png", "01.png"]
    assert (work / "ct_mri.safetensors").is_file() and (work / "rows.csv").is_file()

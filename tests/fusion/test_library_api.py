"""The library without the CLI: the package root's stable names, directory fusion from Python
(plan, fuse, resume), the one device rule, the one pairing rule, CLI choices taken from the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fusionmamba_cli as fm
from fusionmamba_cli.errors import InvalidRequestError
from tests.cli.helpers import one_thread, save_grey  # noqa: F401 - one_thread: autouse fixture
from tests.conftest import REPO

STABLE = ("FusionMamba", "FusionMambaConfig", "create_model", "fuse_images", "load_model", "selective_scan")


def test_package_root_exports_the_stable_api():
    assert set(STABLE) <= set(fm.__all__)
    for name in fm.__all__:
        assert getattr(fm, name) is not None, name
    for name in ("plan_batch", "fuse_directory", "BatchPlan", "BatchPlanError", "Fuser", "images_by_stem"):
        assert name in fm.fusion.__all__ and hasattr(fm.fusion, name)


def test_importing_the_library_loads_no_cli():
    code = "import sys, fusionmamba_cli, fusionmamba_cli.fusion; print(sorted(m for m in ('typer', 'rich', 'fusionmamba_cli.cli') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_fuse_images_from_the_root(micro_weights):
    model = fm.load_model(micro_weights)
    fused = fm.fuse_images(model, np.full((12, 20), 0.2, np.float32), np.full((12, 20), 0.3, np.float32))
    assert fused.shape == (12, 20) and fused.dtype == np.float32 and 0 <= fused.min() <= fused.max() <= 1


def _folders(tmp_path: Path, names) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    for i, name in enumerate(names):
        save_grey(first / f"{name}.png", 16, 24, i)
        save_grey(second / f"{name}.png", 16, 24, 50 + i)
    return first, second


def test_directory_fusion_from_python(tmp_path, micro_weights):
    from fusionmamba_cli.fusion import Fuser, fuse_directory, plan_batch

    first, second = _folders(tmp_path, ["p0", "p1", "p2"])
    (first / "alone.png").write_bytes((first / "p0.png").read_bytes())
    plan = plan_batch(first, second, tmp_path / "out", ext="tif")
    assert plan.directory_mode and [p.name for p, _ in plan.items] == ["p0", "p1", "p2"]
    assert [p.name for p in plan.unmatched] == ["alone.png"]
    assert plan.shard(1, 2) == plan.items[1::2]
    fuser = Fuser(fm.load_model(micro_weights), task="ct_mri")
    seen = []
    outcomes = fuse_directory(fuser, plan, on_outcome=seen.append)
    assert [o.status for o in outcomes] == ["ok"] * 3 and seen == outcomes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.tif", "p1.tif", "p2.tif"]
    again = fuse_directory(fuser, plan_batch(first, second, tmp_path / "out", ext="tif"))
    assert [o.status for o in again] == ["skipped"] * 3  # a rerun resumes


def test_single_file_plan_replaces_but_never_an_input(tmp_path, micro_weights):
    from fusionmamba_cli.fusion import BatchPlanError, Fuser, fuse_directory, plan_batch

    a, b = save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    (tmp_path / "f.png").write_bytes(b"stale")
    plan = plan_batch(a, b, tmp_path / "f.png")
    assert not plan.directory_mode
    [outcome] = fuse_directory(Fuser(fm.load_model(micro_weights)), plan)
    assert outcome.status == "ok" and (tmp_path / "f.png").read_bytes() != b"stale"
    with pytest.raises(BatchPlanError, match="is an input"):
        plan_batch(a, b, b)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda t: (t / "missing.png", t / "b.png", t / "f.png"), "missing.png: no such file or directory"),
        (lambda t: (t / "a.png", t / "d", t / "f.png"), "give two files or two directories"),
        (lambda t: (t / "a.png", t / "b.png", t / "f.txt"), "unsupported output format"),
    ],
)
def test_plan_errors_are_the_package_errors(tmp_path, make, message):
    from fusionmamba_cli.fusion import BatchPlanError, plan_batch

    save_grey(tmp_path / "a.png", 8, 8, 1), save_grey(tmp_path / "b.png", 8, 8, 2)
    (tmp_path / "d").mkdir()
    with pytest.raises(BatchPlanError, match=message) as caught:
        plan_batch(*make(tmp_path))
    assert isinstance(caught.value, InvalidRequestError)


def test_one_device_rule():
    from fusionmamba_cli.devices import DeviceError, pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" AUTO ").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad, message in (("gpu", "not a device"), ("meta", "only cpu and cuda")):
        with pytest.raises(DeviceError, match=message):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            pick_device("cuda")


def test_one_device_rule_under_torchrun(monkeypatch):
    from fusionmamba_cli import devices

    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 2)
    assert devices.pick_device("auto") == torch.device("cuda", 1)
    assert devices.pick_device("cuda") == torch.device("cuda", 1)
    assert devices.pick_device("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_fuse_and_evaluate_pair_files_alike(tmp_path):
    """One pairing rule: WebP inputs count, and of two files with one stem the first by name is used."""
    from fusionmamba_cli.datasets import list_split_pairs
    from fusionmamba_cli.fusion import match_pairs

    ct, mri = tmp_path / "ct_mri/test/ct", tmp_path / "ct_mri/test/mri"
    ct.mkdir(parents=True), mri.mkdir(parents=True)
    from PIL import Image

    for folder in (ct, mri):
        save_grey(folder / "a.png", 8, 8, 1)
        Image.open(folder / "a.png").save(folder / "w.webp", lossless=True)
    save_grey(ct / "a.tif", 8, 8, 3)  # a second file for stem "a": a.png comes first
    pairs, unmatched = match_pairs(ct, mri)
    fused_view = [(p.name, p.first, p.second) for p in pairs]
    assert fused_view == list_split_pairs(tmp_path, "ct_mri", "test")
    assert [name for name, _, _ in fused_view] == ["a", "w"] and fused_view[0][1].name == "a.png"
    assert unmatched == [ct / "a.tif"]


def test_cli_choices_come_from_the_library():
    from fusionmamba_cli.benchmarking import DTYPES
    from fusionmamba_cli.cli.common import DTypeName, NormalizeName, PresetName, TaskName
    from fusionmamba_cli.fusion.pipeline import NORMALIZE_MODES
    from fusionmamba_cli.model import list_presets
    from fusionmamba_cli.tasks import TASK_NAMES

    for enum, values in ((TaskName, TASK_NAMES), (PresetName, list_presets()), (NormalizeName, NORMALIZE_MODES), (DTypeName, DTYPES)):
        assert [member.value for member in enum] == list(values)

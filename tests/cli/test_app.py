"""The entry point: usage errors are one message and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionmamba_cli", *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("args", [("fuse", "a.png"), ("nonsense",), ("fuse", "a", "b", "-o", "c.png", "--device-typo", "x"), ("evaluate",)])
def test_usage_errors_exit_2_without_traceback(args):
    proc = _run(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_help_and_version_exit_0():
    assert _run("--help").returncode == 0
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("fusionmamba ")


def test_info_json_reports_backend_and_weights():
    import json

    proc = _run("info", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["device"] == "cpu" and data["scan_backend"] == "numba"
    assert {"numba", "torch"} <= set(data["scan_backends_available"])
    assert {w["where"] for w in data["weights"]} <= {"bundled", "cached", "corrupt", "remote-only", "missing"}
    assert any(w["installed"] for w in data["weights"])


def test_info_honours_a_forced_backend_with_fallback_warning():
    proc = _run("info", "--json", "--device", "cpu", "--scan-backend", "reference")
    assert proc.returncode == 0 and '"scan_backend": "reference"' in proc.stdout


def test_evaluate_without_a_data_root_is_a_usage_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FUSIONMAMBA_DATA", None)  # so the default ./data, absent in tmp_path, is used
    proc = subprocess.run([sys.executable, "-m", "fusionmamba_cli", "evaluate", "--task", "ct_mri"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "data root not found" in proc.stderr and "Traceback" not in proc.stderr

"""The entry point: usage errors are one message and exit code 2, never a traceback."""

from __future__ import annotations

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

"""Multi-process batch fusion with PyTorch's own launcher: 2 gloo processes on CPU shard the pairs,
each pair is written exactly once, rank 0 alone prints the summary."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fusionmamba_cli import distributed
from tests.cli.helpers import save_grey, temp_files

REPO = Path(__file__).resolve().parents[2]
PAIRS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUSIONMAMBA_", "WORLD_SIZE", "RANK", "LOCAL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(_free_port()), "-m", "fusionmamba_cli", "fuse", *map(str, args), "--device", "cpu",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=REPO, check=False)


def _summary_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " fused, " in line and " failed" in line]


@pytest.mark.slow
def test_two_gloo_ranks_write_every_pair_exactly_once(tmp_path, micro_weights):
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    first.mkdir(), second.mkdir()
    for i in range(PAIRS):
        save_grey(first / f"p{i}.png", 16, 24, seed=i)
        save_grey(second / f"p{i}.png", 16, 24, seed=50 + i)

    run = _torchrun(first, second, "-o", out, "-w", micro_weights)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _summary_lines(run.stderr) == [f"{PAIRS} fused, 0 skipped (exist), 0 failed"], run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}.png" for i in range(PAIRS)]
    assert temp_files(tmp_path) == []

    # again with a bad pair, as JSON lines from both ranks: every name once, the error once
    (first / "bad.png").write_text("not an image")
    save_grey(second / "bad.png", 16, 24)
    run = _torchrun(first, second, "-o", out, "-w", micro_weights, "--json", "--overwrite")
    assert run.returncode != 0  # a failed pair: exit 1 on every rank (torchrun then reports the failure)
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["name"] for r in records) == ["bad"] + [f"p{i}" for i in range(PAIRS)]
    assert [r["status"] for r in records].count("ok") == PAIRS
    assert [r["error"] for r in records if r["status"] == "failed"] == [f"{first / 'bad.png'}: not an image (unrecognised format)"]
    assert temp_files(tmp_path) == []


def test_helpers_without_a_launcher(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_distributed() == (0, 1, 0)
    assert not distributed.is_initialized() and distributed.is_main()
    assert distributed.shard(list(range(7)), 1, 3) == [1, 4]
    assert distributed.shard(list(range(7))) == list(range(7))
    assert distributed.gather_to_rank0({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_from_rank0(5) == 5
    distributed.barrier()
    distributed.cleanup()


def test_shards_are_disjoint_and_complete():
    items = list(range(23))
    shards = [distributed.shard(items, rank, 4) for rank in range(4)]
    assert sorted(i for part in shards for i in part) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1

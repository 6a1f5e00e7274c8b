"""Compare two training runs step by step: the logged losses (exactly) and the final weights' digest.

Usage: python tools/compare_runs.py REF_DIR RUN_DIR [--digest-only]
REF_DIR/digest.json (written with --digest-only) stands in for REF_DIR/final.safetensors when the
reference's weights did not travel. Prints one JSON object; exit 1 when the runs differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fusionmamba_cli.checkpoints.files import build_model, read_checkpoint
from fusionmamba_cli.training.trainer import weights_digest


def _losses(run: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row for row in rows if "loss" in row}


def _digest(run: Path) -> str:
    saved = run / "digest.json"
    if not (run / "final.safetensors").is_file() and saved.is_file():
        return json.loads(saved.read_text())["digest"]
    state, config, _ = read_checkpoint(run / "final.safetensors")
    return weights_digest(build_model(state, config))


def main() -> int:
    ref, run = Path(sys.argv[1]), Path(sys.argv[2])
    if "--digest-only" in sys.argv:
        print(json.dumps({"digest": _digest(ref)}))
        return 0
    a, b = _losses(ref), _losses(run)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    stops = [row["step"] for row in log if row.get("stopped")]
    common = sorted(set(a) & set(b))
    after = [s for s in common if stops and s > stops[0]]
    keys = ("loss", "int", "text", "ssim", "lr")
    max_diff = max((abs(a[s][k] - b[s][k]) for s in common for k in keys if k in a[s]), default=None)
    report = {
        "stopped_at": stops[0] if stops else None,
        "steps_compared": len(common),
        "steps_after_resume": len(after),
        "last_step": max(b) if b else None,
        "identical_losses": all(all(a[s].get(k) == b[s].get(k) for k in keys) for s in common),
        "max_abs_diff": max_diff,
        "digest_ref": _digest(ref),
        "digest_run": _digest(run),
    }
    report["identical_weights"] = report["digest_ref"] == report["digest_run"]
    print(json.dumps(report))
    return 0 if report["identical_losses"] and report["identical_weights"] and after else 1


if __name__ == "__main__":
    sys.exit(main())

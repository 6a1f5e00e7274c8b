"""Score trained runs on test splits with our evaluate library (paper metrics), as one JSON.

Usage: python tools/eval_runs.py DATA_ROOT OUT.json RUN_DIR:task1+task2 [RUN_DIR:tasks ...]
SPLIT (env, default test) picks the split: choose between runs on a held-out part of train, report on test.
Each RUN_DIR holds final-fp16.safetensors (as tools/gpu_train.sh leaves it) or final.safetensors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from fusionmamba_cli import load_model
from fusionmamba_cli.evaluation import PAPER_METRICS, evaluate_model
from fusionmamba_cli.fusion.pipeline import Fuser


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = json.loads(out.read_text()) if out.exists() else {}
    split = os.environ.get("SPLIT", "test")
    torch.set_num_threads(1)
    for spec in sys.argv[3:]:
        run, tasks = spec.split(":")
        weights = next(p for p in (Path(run) / "final-fp16.safetensors", Path(run) / "final.safetensors", Path(run)) if p.is_file())
        model = load_model(weights)
        for task in tasks.split("+"):
            key = f"{Path(run).name}/{task}"
            if key in results:
                continue
            result = evaluate_model(Fuser(model, task=task), root, task, split, list(PAPER_METRICS))
            results[key] = result.mean()
            print(key, {k: round(v, 4) for k, v in result.mean().items() if v is not None}, flush=True)
            out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Train several compact FusionMamba models at once on one GPU (they are launch-bound, so they share
# it well), then pack their final weights (fp16) and logs into $OUT in parts of <= 15 MiB.
# Usage on the GPU machine, from the repo root, with the packed training data carried in scratch/:
#   bash tools/gpu_train.sh MINUTES RUN_SPEC [RUN_SPEC ...]
# RUN_SPEC is  name:task1+task2[:extra train args, comma-separated]  (e.g. --vif-weight,0.1,--steps,1200)
# DATA (env) overrides the packed data file (default scratch/pack/train.npz). Every run holds every
# 5th training pair out as its validation split (--holdout 5 --val holdout).
set -uo pipefail
minutes=$1; shift
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p runs
for spec in "$@"; do
  IFS=: read -r name tasks extra <<<"$spec"
  task_args=""; for t in ${tasks//+/ }; do task_args="$task_args --task $t"; done
  python3 -m fusionmamba_cli train $task_args --data "${DATA:-scratch/pack/train.npz}" --out runs/$name \
    --steps 1000000 --batch-size 16 --crop 160 --lr 2e-4 --lr-schedule cosine --holdout 5 --val holdout \
    --val-every 200 --time-limit "$minutes" --save-every 1000000 --log-every 50 --quiet ${extra//,/ } \
    > runs/$name.stdout 2>&1 &
done
wait
for d in runs/*/; do
  python3 - "$d" <<'PY'
import sys, torch
from pathlib import Path
from fusionmamba_cli.checkpoints.files import read_checkpoint, build_model, save_weights
run = Path(sys.argv[1])
state, config, meta = read_checkpoint(run / "final.safetensors")
save_weights(build_model(state, config), run / "final-fp16.safetensors", metadata=meta, dtype=torch.float16)
(run / "final.safetensors").unlink()
PY
done
tail -n 3 runs/*/log.jsonl; tail -n 3 runs/*.stdout
tar cf - --exclude=last.pt runs | split -b 15m - "$OUT/runs.tar.part-"
ls -la "$OUT"

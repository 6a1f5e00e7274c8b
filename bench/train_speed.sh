#!/usr/bin/env bash
# Training speed of `fusionmamba train` on the GPU with each backward of the Triton scan: the
# statewise one (the default) and the tiled one (what --deterministic uses), the run otherwise the
# same. Prints each run's last log.jsonl line (steps_per_s).
# Usage on the GPU machine, from the repo root: bash bench/train_speed.sh DATA TASK [STEPS]
# (DATA: a data root or a packed .npz, as `train --data` takes).
set -euo pipefail
data=$1 task=$2 steps=${3:-120}
export PYTHONPATH=$PWD FUSIONMAMBA_SCAN_BACKEND=triton
args=(--task "$task" --data "$data" --preset compact --steps "$steps" --batch-size 8 --crop 128
      --log-every 40 --save-every 100000 --seed 0 --quiet)
for impl in statewise tiled; do
  out=$(mktemp -d)
  python3 -c "import sys; from fusionmamba_cli.ops import scan_triton as st; st._TUNING['bwd_impl'] = sys.argv.pop(1)
from fusionmamba_cli.cli.app import main; main()" "$impl" train "${args[@]}" --out "$out"
  echo "$impl $(tail -n 1 "$out/log.jsonl")"
done

#!/usr/bin/env bash
# Show that a GPU training resumes exactly across two device calls (training issue): an
# uninterrupted reference run and a run cut by --time-limit (call 1), then the cut run resumed
# (call 2) and compared step by step with the reference (tools/compare_runs.py).
# Usage on the GPU machine:  bash tools/gpu_resume_demo.sh start|resume DATA DIR
set -euo pipefail
mode=$1 data=$2 dir=$3
args=(--task gfp_pc --data "$data" --preset compact-max --steps 600 --batch-size 4 --crop 128 --lr 2e-4
      --lr-schedule cosine --warmup 20 --log-every 10 --save-every 100000 --deterministic --seed 7 --quiet)
export PYTHONPATH=$PWD
if [[ $mode == start ]]; then
  python3 -m fusionmamba_cli train "${args[@]}" --out "$dir/ref" &
  python3 -m fusionmamba_cli train "${args[@]}" --out "$dir/cut" --time-limit 0.5
  wait
  python3 tools/compare_runs.py "$dir/ref" "$dir/ref" --digest-only > "$dir/ref/digest.json"
  cat "$dir/ref/digest.json"; tail -n 2 "$dir/cut/log.jsonl"
else
  python3 -m fusionmamba_cli train "${args[@]}" --out "$dir/cut" --resume
  python3 tools/compare_runs.py "$dir/ref" "$dir/cut"
fi

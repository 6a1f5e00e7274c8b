#!/usr/bin/env bash
# Show that a GPU training resumes exactly across two device calls (training issue): an
# uninterrupted reference run and a run cut by --time-limit (call 1), then the cut run resumed
# (call 2) and compared step by step with the reference (tools/compare_runs.py).
# Usage on the GPU machine:  bash tools/gpu_resume_demo.sh start|resume DATA DIR
# `start` packs only what the resume needs into $OUT (demo.tar.part-*, ~33 MB: the cut run's last.pt
# and both logs, the reference's weight digest): unpack it here into a git-ignored folder and carry
# that folder into the `resume` call. Keep other outputs of the same call under 64 MiB in all.
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
  if [[ -n "${OUT:-}" ]]; then
    tar cf - "$dir/cut/last.pt" "$dir/cut/log.jsonl" "$dir/ref/log.jsonl" "$dir/ref/digest.json" \
      | split -b 15m - "$OUT/demo.tar.part-"
  fi
else
  python3 -m fusionmamba_cli train "${args[@]}" --out "$dir/cut" --resume
  python3 tools/compare_runs.py "$dir/ref" "$dir/cut"
fi

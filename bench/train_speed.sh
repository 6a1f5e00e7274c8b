#!/usr/bin/env bash
# Training speed of `fusionmamba train` on the GPU, one run per VARIANT, the runs otherwise the same.
# A VARIANT is the Triton scan's backward kernel, "statewise" (the default) or "tiled" (trained with
# --deterministic, which is how training gets that kernel; it also turns on torch's other
# deterministic algorithms, unlike the tiled row in BENCHMARKS.md, which forced the kernel alone),
# optionally followed by extra train options after a colon, comma-separated:
#   statewise  tiled  statewise:--amp  statewise:--compile  statewise:--compile,--amp
# Prints each run's last log.jsonl line (steps_per_s) and its wall time.
# Usage on the GPU machine, from the repo root: bash bench/train_speed.sh DATA TASK STEPS [VARIANT ...]
# (DATA: a data root or a packed .npz, as `train --data` takes; default variants: statewise tiled).
set -euo pipefail
data=$1 task=$2 steps=$3; shift 3
variants=("$@"); [[ ${#variants[@]} -gt 0 ]] || variants=(statewise tiled)
export PYTHONPATH=$PWD
args=(--task "$task" --data "$data" --preset compact --steps "$steps" --batch-size 8 --crop 128
      --log-every 40 --save-every 100000 --seed 0 --quiet --scan-backend triton)
for variant in "${variants[@]}"; do
  impl=${variant%%:*} extra=""
  [[ $variant == *:* ]] && extra=${variant#*:}
  out=$(mktemp -d) start=$(date +%s)
  kernel=()
  [[ $impl == tiled ]] && kernel=(--deterministic)
  python3 -m fusionmamba_cli train "${args[@]}" ${kernel[@]+"${kernel[@]}"} ${extra//,/ } --out "$out"
  echo "$variant ($(( $(date +%s) - start )) s) $(tail -n 1 "$out/log.jsonl")"
done

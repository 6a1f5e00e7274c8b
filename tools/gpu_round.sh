#!/usr/bin/env bash
# One GPU training round of this project's shipped weights (see BENCHMARKS.md "How the weights were
# trained"): continue every task model from its shipped weights with a cosine schedule, comparing
# loss weightings side by side. Usage on the GPU machine: bash tools/gpu_round.sh MINUTES STEPS SPEC...
# where SPEC is name:int,text,ssim:task1+task2:init  (init = weights name or file).
set -uo pipefail
minutes=$1 steps=$2; shift 2
specs=()
for spec in "$@"; do
  IFS=: read -r name weights tasks init <<<"$spec"
  specs+=("$name:$weights:$tasks:--init,$init,--lr,2e-4,--lr-schedule,cosine,--warmup,100,--steps,$steps")
done
nvidia-smi --query-gpu=name --format=csv,noheader
bash tools/gpu_train.sh "$minutes" "${specs[@]}"

#!/usr/bin/env bash
# One GPU training round of this project's shipped weights (see BENCHMARKS.md "How the weights were
# trained"): several runs side by side with a cosine schedule, e.g. comparing loss weightings.
# Usage on the GPU machine: [PRESET=compact] bash tools/gpu_round.sh MINUTES STEPS SPEC...
# where SPEC is name:int,text,ssim:task1+task2:init  (init = weights name or file, or - for none).
set -uo pipefail
minutes=$1 steps=$2; shift 2
specs=()
for spec in "$@"; do
  IFS=: read -r name weights tasks init <<<"$spec"
  extra="--preset,${PRESET:-compact},--lr,${LR:-2e-4},--lr-schedule,cosine,--warmup,100,--steps,$steps"
  [[ "$init" != "-" ]] && extra="--init,$init,$extra"
  specs+=("$name:$weights:$tasks:$extra")
done
nvidia-smi --query-gpu=name --format=csv,noheader
bash tools/gpu_train.sh "$minutes" "${specs[@]}"

#!/usr/bin/env bash
# All GPU numbers of BENCHMARKS.md in one device call (results in $OUT):
#   model.jsonl   fusionmamba benchmark rows: compact/official, 256-2048 px, batch 1/16, fp32/bf16,
#                 CUDA graphs on/off, triton vs torch scan
#   bench_scan.json  scan backends side by side (torch, triton, mamba-ssm)
# For the mamba-ssm columns, first here: mkdir -p scratch/tools && cp ../shared/tools/build-mamba-ssm-on-gpu.sh
# ../shared/tools/mamba_ssm-*.tar.gz scratch/tools/, and carry scratch/tools (the build takes ~3 min there).
# Without it the scan benchmark is skipped. Scan only: python3 bench/bench_scan.py --out "$OUT/bench_scan.json".
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/model/test_graphed.py 2>&1 | tail -2
B="python3 -m fusionmamba_cli benchmark --device cuda --warmup 5 --repeat 20 --json"
run() { echo "+ $*" >&2; $B "$@" >> "$OUT/model.jsonl" || echo "FAILED: $*" >&2; }
run --preset compact --size 256 --size 512 --size 1024 --size 2048
run --preset compact --size 256 --size 2048 --no-cuda-graphs
run --preset compact --size 256 --batch 16
run --preset compact --size 256 --size 2048 --dtype bf16
run --preset official --size 256 --size 512 --size 1024 --size 2048
run --preset official --size 256 --no-cuda-graphs
run --preset official --size 256 --batch 16
run --preset official --size 256 --size 2048 --dtype bf16
run --preset compact --size 256 --scan-backend torch
if [[ -d scratch/tools ]]; then
  bash scratch/tools/build-mamba-ssm-on-gpu.sh scratch/tools/mamba_ssm-*.tar.gz 2>&1 | tail -3
  run --preset official --size 256 --scan-backend mamba_ssm
  run --preset compact --size 256 --scan-backend mamba_ssm
  python3 bench/bench_scan.py --out "$OUT/bench_scan.json" --graphs 2>&1 | tail -30
fi

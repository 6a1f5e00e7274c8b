#!/usr/bin/env bash
# Side-by-side scan benchmark on the GPU machine, mamba-ssm's compiled kernel included.
# Here (before the GPU call): copy the build script and sdist into the carried scratch folder:
#   mkdir -p scratch/tools && cp ../shared/tools/build-mamba-ssm-on-gpu.sh ../shared/tools/mamba_ssm-*.tar.gz scratch/tools/
# On the GPU machine (carry ["scratch"]), from the repo root:
#   bash bench/run_scan_bench_gpu.sh      # ~3 min build + ~1 min benchmark; results in $OUT/bench_scan.json
set -euo pipefail
bash scratch/tools/build-mamba-ssm-on-gpu.sh scratch/tools/mamba_ssm-*.tar.gz
python3 bench/bench_scan.py --out "${OUT:-.}/bench_scan.json"

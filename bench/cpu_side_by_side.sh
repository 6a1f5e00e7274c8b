#!/usr/bin/env bash
# 256x256 CPU latency side by side, alternated within one run: a "before" checkout of the package,
# this checkout, and DATFuse (bench/datfuse_cpu.py). Not a test.
# Usage: bash bench/cpu_side_by_side.sh BEFORE_DIR [ROUNDS]   (BEFORE_DIR: e.g. `git archive main | tar -x -C DIR`)
set -euo pipefail
before=$1
rounds=${2:-3}
after=$(cd "$(dirname "$0")/.." && pwd)
median() { python -c "import json,sys; print(round(json.loads(sys.stdin.read().splitlines()[-1])['rows'][0]['latency_ms'], 1))"; }
for ((r = 1; r <= rounds; r++)); do
  for args in "" "--weights compact-ir_vis"; do
    b=$(cd "$before" && OMP_NUM_THREADS=2 PYTHONPATH="$before" python -m fusionmamba_cli benchmark --device cpu --size 256 $args --json | median)
    a=$(cd "$after" && OMP_NUM_THREADS=2 PYTHONPATH="$after" python -m fusionmamba_cli benchmark --device cpu --size 256 $args --json | median)
    echo "round $r ${args:-default model}: before $b ms, after $a ms, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  d=$(PYTHONPATH="$after" python "$after/bench/datfuse_cpu.py" --size 256 --threads 2 --json | python -c "import json,sys; print(round(json.loads(sys.stdin.read())['latency_ms'], 1))")
  echo "round $r DATFuse: $d ms, load $(cut -d' ' -f1-3 /proc/loadavg)"
done

#!/usr/bin/env bash
# The "Large images" GPU number of BENCHMARKS.md: fuse one 8000x6000 grey pair with `compact` and
# automatic tiling, timed by the tool and by /usr/bin/time. Run on the GPU machine from the repo root.
# (The model benchmarks are in bench/gpu_bench_all.sh, the resume check in tools/gpu_resume_demo.sh,
# training rounds in tools/gpu_round.sh.)
set -euo pipefail
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 - <<'PY'
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for name in ("a", "b"):
    img = (rng.random((600, 800)) * 255).astype(np.uint8)
    Image.fromarray(img).resize((8000, 6000), Image.BILINEAR).save(f"/tmp/big_{name}.png")
PY
/usr/bin/time -v python3 -m fusionmamba_cli fuse /tmp/big_a.png /tmp/big_b.png -o /tmp/big_out.png --task pet_mri \
  -w compact-pet_mri --device cuda --overwrite 2>&1 | grep -E "wrote|Elapsed|Maximum resident|error"

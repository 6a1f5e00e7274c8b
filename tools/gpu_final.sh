#!/usr/bin/env bash
# One GPU session: model benchmarks (GPU idle), a 8000x6000 fusion, a resume-exactness check,
# and a continuation round for the medical/GFP weights. Results go to $OUT.
# Usage on the GPU machine from the repo root, with scratch/ carried (med.npz, init/*.safetensors):
#   bash tools/gpu_final.sh TRAIN_MINUTES
set -uo pipefail
export PYTHONPATH=$PWD
minutes=$1
log=$OUT/gpu_final.log
exec > >(tee -a "$log") 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bench() { echo "## fusionmamba benchmark $*"; timeout 150 python3 -m fusionmamba_cli benchmark --device cuda --warmup 5 --repeat 20 --json "$@"; echo; }
bench --preset compact --size 256 --size 512 --size 1024 --size 2048
bench --preset compact --size 256 --batch 16
bench --preset compact --size 256 --scan-backend torch
bench --preset official --size 256 --size 512 --size 1024
bench --preset official --size 256 --batch 16
echo "## 8000x6000 pair, compact, automatic tiling"
python3 - <<'PY'
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for name in ("a", "b"):
    img = (rng.random((600, 800)) * 255).astype(np.uint8)
    Image.fromarray(img).resize((8000, 6000), Image.BILINEAR).save(f"/tmp/big_{name}.png")
PY
/usr/bin/time -v python3 -m fusionmamba_cli fuse /tmp/big_a.png /tmp/big_b.png -o /tmp/big_out.png --task pet_mri -w scratch/init/pet4.safetensors --device cuda 2>&1 | grep -E "wrote|Elapsed|Maximum resident|error"
python3 -c "import torch; print('note: GPU peak for the fuse above is not visible from here')"
echo "## resume exactness on GPU (deterministic): 100 steps + resume to 200 vs 200 straight"
common="--task ct_mri --data scratch/med.npz --preset compact --batch-size 8 --crop 128 --log-every 1 --deterministic -q"
( python3 -m fusionmamba_cli train $common --out /tmp/rs_split --steps 100 && python3 -m fusionmamba_cli train $common --out /tmp/rs_split --steps 200 --resume ) &
python3 -m fusionmamba_cli train $common --out /tmp/rs_straight --steps 200 &
echo "## continuation training ($minutes min)"
X=--lr,2e-4,--lr-schedule,cosine,--steps,1200
DATA=scratch/med.npz bash tools/gpu_train.sh "$minutes" \
  ct:10,10,4:ct_mri:--init,scratch/init/ct4.safetensors,$X \
  pet:10,10,4:pet_mri:--init,scratch/init/pet4.safetensors,$X \
  spect:10,10,4:spect_mri:--init,scratch/init/spect4.safetensors,$X \
  gfp:10,10,4:gfp_pc:--init,scratch/init/gfp4.safetensors,--lr,1e-4,--lr-schedule,cosine,--steps,1000
wait
python3 - <<'PY'
import json
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}
a, b = losses("/tmp/rs_split/log.jsonl"), losses("/tmp/rs_straight/log.jsonl")
steps = sorted(set(a) & set(b))
diff = max(abs(a[s] - b[s]) for s in steps)
after = max(abs(a[s] - b[s]) for s in steps if s > 100)
print(f"resume check: {len(steps)} common steps, max |loss diff| all {diff:.3e}, after resume {after:.3e}")
PY

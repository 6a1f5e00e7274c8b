"""Loss terms of the shipped task models against the plain max rule on training crops (analysis for
BENCHMARKS.md, training round 4). Usage: python tools/loss_vs_max.py  (reads ../shared/data; prints JSON)
"""
import json
from pathlib import Path

import torch

from fusionmamba_cli import load_model
from fusionmamba_cli.training.data import load_pairs, make_batch
from fusionmamba_cli.training.losses import LossWeights, fusion_loss

torch.set_num_threads(2)
out = {}
for task in ["ir_vis", "ct_mri", "pet_mri", "spect_mri", "gfp_pc"]:
    pairs = load_pairs(Path("../shared/data"), [task], "train")
    model = load_model(f"compact-{task}").eval()
    acc = {"model": {}, "max": {}}
    for step in range(6):
        x1, x2 = make_batch(pairs, step, 4, 192, seed=123)
        with torch.no_grad():
            fused = model(x1, x2)
        for name, f in (("model", fused), ("max", torch.maximum(x1, x2))):
            for norm in ("l1", "l2"):
                _, terms = fusion_loss(f, x1, x2, LossWeights(1, 1, 1), norm)
                for k, v in terms.items():
                    key = k if k != "int" else f"int_{norm}"
                    acc[name].setdefault(key, []).append(v.item())
    out[task] = {n: {k: round(sum(v) / len(v), 4) for k, v in d.items()} for n, d in acc.items()}
    for w in ("10,10,1", "1,1,10"):
        lw = LossWeights.parse(w)
        for n in ("model", "max"):
            t = out[task][n]
            out[task][n][f"total_{w}_l1"] = round(lw.intensity * t["int_l1"] + lw.texture * t["text"] + lw.ssim * t["ssim"], 4)
    print(task, json.dumps(out[task]), flush=True)
print(json.dumps(out))

"""Write weights/manifest.json: name, file, sha256, size, preset, tasks and provenance of each
shipped weights file, plus test-split metrics when a metrics JSON is given.

Usage: python tools/make_manifest.py [METRICS.json]
METRICS.json maps "<weights name>/<task>" to {metric: mean} (as `fusionmamba evaluate --json` means).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fusionmamba_cli.checkpoints.manifest import sha256_of

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
PACK = "../shared/data train splits as luminance (ir_vis images with a side > 512 downscaled to 512), crop 192, batch 12"
COMMON = {"preset": "compact", "bundled": True, "dtype": "float16", "card": "1 GPU (H200 round 1, H100 rounds 2-3)"}

ROUNDS_MED = [
    {"steps": None, "loss_weights": "10,10,1", "lr": "1e-4 constant", "init": "random (seed 0)"},
    {"steps": None, "loss_weights": "10,10,4", "lr": "5e-4 cosine, 50 warm-up", "init": "round 1"},
    {"steps": 1200, "loss_weights": "10,10,4", "lr": "2e-4 cosine", "init": "round 2"},
]


def _med(task: str, steps: tuple[int, int, int]) -> list[dict]:
    return [dict(r, steps=s, data=task) for r, s in zip(ROUNDS_MED, steps)]


ENTRIES = [
    {"name": "compact-ir_vis", "tasks": ["ir_vis"], "description": "IR-VIS (TNO, RoadScene, MSRS, M3FD samples)",
     "training": [{"steps": 1673, "loss_weights": "1,1,10 (paper)", "lr": "1e-4 constant", "init": "random (seed 0)", "data": "ir_vis"}]},
    {"name": "compact-ct_mri", "tasks": ["ct_mri"], "description": "CT-MRI (AANLIB)", "training": _med("ct_mri", (1672, 1588, 1200))},
    {"name": "compact-pet_mri", "tasks": ["pet_mri"], "description": "PET-MRI (AANLIB), PET fused on luminance", "training": _med("pet_mri", (1673, 1592, 1200))},
    {"name": "compact-spect_mri", "tasks": ["spect_mri"], "description": "SPECT-MRI (AANLIB), SPECT fused on luminance", "training": _med("spect_mri", (1665, 1579, 1200))},
    {"name": "compact-gfp_pc", "tasks": ["gfp_pc"], "description": "GFP + phase contrast: the PET-MRI round-1 model fine-tuned on the 3 gfp_pc pairs",
     "training": [
         {"steps": 1673, "loss_weights": "10,10,1", "lr": "1e-4 constant", "init": "random (seed 0)", "data": "pet_mri"},
         {"steps": 1500, "loss_weights": "10,10,4", "lr": "2e-4 cosine", "init": "round 1", "data": "gfp_pc"},
         {"steps": 1000, "loss_weights": "10,10,4", "lr": "1e-4 cosine", "init": "round 2", "data": "gfp_pc"}]},
    {"name": "compact-general", "tasks": ["ir_vis", "ct_mri", "pet_mri", "spect_mri", "gfp_pc"], "description": "general default (all five tasks jointly)",
     "training": [{"steps": 1699, "loss_weights": "10,10,1", "lr": "1e-4 constant", "init": "random (seed 0)", "data": "all five tasks"}]},
]


def main() -> None:
    metrics = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else {}
    weights = []
    for entry in ENTRIES:
        path = WEIGHTS / f"{entry['name']}.safetensors"
        record = {"name": entry["name"], "file": path.name, "sha256": sha256_of(path), "size": path.stat().st_size, **COMMON, **entry}
        record["training_data"] = PACK
        scores = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.split("/", 1)[0] == entry["name"]}
        if scores:
            record["test_metrics"] = scores
        weights.append(record)
    manifest = {
        "repo_id": "fusionmamba/fusionmamba-weights",
        "default": "compact-general",
        "task_defaults": {t: f"compact-{t}" for t in ("ir_vis", "ct_mri", "pet_mri", "spect_mri", "gfp_pc")},
        "weights": weights,
    }
    (WEIGHTS / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()

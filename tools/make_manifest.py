"""Write weights/manifest.json: name, file, sha256, size, preset, tasks and provenance of each
shipped weights file, plus test-split metrics when a metrics JSON is given.

Usage: python tools/make_manifest.py [METRICS.json]
METRICS.json maps "<weights name>/<task>" to {metric: mean} (as `fusionmamba evaluate --json` means).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from fusionmamba_cli.checkpoints.files import read_checkpoint
from fusionmamba_cli.checkpoints.manifest import sha256_of
from fusionmamba_cli.model.two_scale import params_from_config

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
PACK = ("../shared/data train splits as luminance (ir_vis images with a side > 512 downscaled to 512), every 5th pair "
        "per task held out for validation (--holdout 5), crop 160, batch 16")
COMMON = {"preset": "compact-two-scale", "bundled": True, "dtype": "float16", "card": "1 GPU (H100, 2026-12-06)",
          "objective": "two-scale"}


def _round(task_data: str, sigma: int, steps: int) -> list[dict]:
    """The one training run behind each shipped file (tools/gpu_train.sh, 11 models side by side, 7.5 min)."""
    return [{"steps": steps, "loss": f"two-scale (anchor l1, --vif-weight 0.05, --target-sigma {sigma})",
             "lr": "2e-4 cosine over 1100 steps, stopped by --time-limit", "init": "random (seed 0); head starts at zero",
             "data": task_data}]


# Round 9: a refinement head added to the round-7 compact-ct_mri and trained alone, on this 2-core CPU
# (BENCHMARKS.md, "Round 9"), chosen over the round-7 file on the hold-out split (VIF, Qabf, SF, MS-SSIM up).
REFINE_ROUND = {"steps": 1500, "loss": "two-scale (anchor l2, --vif-weight 3, --qabf-weight 10)",
                "lr": "1e-3 cosine over 1500 steps", "card": "CPU (2 cores, 2026-12-07)",
                "init": "compact-ct_mri of round 7, plus --refine-width 16 --refine-depth 5 --refine-only "
                        "(the network frozen, only the new head trained)",
                "data": "ct_mri, ../shared/data train split, every 5th pair held out, crop 112, batch 8"}

ENTRIES = [
    {"name": "compact-ir_vis", "tasks": ["ir_vis"], "description": "IR-VIS (TNO, RoadScene, MSRS, M3FD samples)", "training": _round("ir_vis", 8, 1036)},
    {"name": "compact-ct_mri", "tasks": ["ct_mri"], "description": "CT-MRI (AANLIB)", "preset": "compact-refine",
     "training": _round("ct_mri", 4, 1039) + [REFINE_ROUND]},
    {"name": "compact-pet_mri", "tasks": ["pet_mri"], "description": "PET-MRI (AANLIB), PET fused on luminance", "training": _round("pet_mri", 4, 1033)},
    {"name": "compact-spect_mri", "tasks": ["spect_mri"], "description": "SPECT-MRI (AANLIB), SPECT fused on luminance", "training": _round("spect_mri", 4, 1037)},
    {"name": "compact-gfp_pc", "tasks": ["gfp_pc"], "description": "GFP + phase contrast (2 training pairs, 1 held out)", "training": _round("gfp_pc", 8, 1066)},
    {"name": "compact-general", "tasks": ["ir_vis", "ct_mri", "pet_mri", "spect_mri", "gfp_pc"], "description": "general default (all five tasks jointly)",
     "training": _round("all five tasks", 4, 1042)},
]


def main() -> None:
    metrics = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else {}
    weights = []
    for entry in ENTRIES:
        path = WEIGHTS / f"{entry['name']}.safetensors"
        record = {"name": entry["name"], "file": path.name, "sha256": sha256_of(path), "size": path.stat().st_size, **COMMON, **entry}
        record["training_data"] = PACK
        if len(entry["tasks"]) == 1:  # round 7: the skip is the task's rule, chosen on the hold-out split
            config = read_checkpoint(path)[1]
            record["rule"] = asdict(params_from_config(config))  # as the file stores it
            record["rule_note"] = ("skip rule set to model.two_scale.TASK_RULES after training (round 7); "
                                   "the head is as trained, its last conv at most 7.6e-6, so the model fuses as the rule"
                                   + ("; round 9 added the refinement head on top" if config.refine_width else ""))
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

"""Weights files: reading/writing (safetensors, the authors' .pth), config inference, bundled weights."""

from fusionmamba_cli.checkpoints.files import (
    infer_config,
    load_model,
    read_checkpoint,
    save_weights,
)
from fusionmamba_cli.checkpoints.registry import (
    WeightsEntry,
    bundled_weights_dir,
    default_weights_for,
    list_weights,
    load_manifest,
    resolve_weights,
)

__all__ = [
    "WeightsEntry",
    "bundled_weights_dir",
    "default_weights_for",
    "infer_config",
    "list_weights",
    "load_manifest",
    "load_model",
    "read_checkpoint",
    "resolve_weights",
    "save_weights",
]

"""Weights: the manifest of named weights, where a name's file is (bundled, then the Hub's cache),
reading/writing files (safetensors, the authors' .pth) with config inference.

Layers, each importing only those before it: manifest -> hub (download, cache lookups) ->
resolve (path -> bundled -> cache) -> files (read, write, load_model) -> convert.
"""

from fusionmamba_cli.checkpoints.files import (
    infer_config,
    load_model,
    read_checkpoint,
    save_weights,
)
from fusionmamba_cli.checkpoints.manifest import (
    WeightsEntry,
    bundled_weights_dir,
    default_weights_for,
    list_weights,
    load_manifest,
)
from fusionmamba_cli.checkpoints.resolve import resolve_weights

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

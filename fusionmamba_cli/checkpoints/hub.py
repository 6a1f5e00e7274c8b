"""Weights on the Hugging Face Hub: lookups in the hub's own cache (downloads: see download-weights)."""

from __future__ import annotations

from pathlib import Path

from fusionmamba_cli.checkpoints.registry import WeightsEntry, load_manifest, verify_file


def find_cached(entry: WeightsEntry, cache_dir: str | None = None, revision: str | None = None) -> Path | None:
    """The verified cached file for `entry`, or None when it was never downloaded."""
    from huggingface_hub import try_to_load_from_cache

    repo_id = load_manifest().repo_id
    if not repo_id:
        return None
    found = try_to_load_from_cache(repo_id, entry.file, cache_dir=cache_dir, revision=revision)
    if not isinstance(found, str):
        return None
    return verify_file(Path(found), entry)

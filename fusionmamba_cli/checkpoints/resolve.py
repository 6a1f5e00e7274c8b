"""Which file a weights source means: a path, else a manifest name (bundled, then the download cache).

`--weights PATH` takes the file as it is; `--weights NAME` takes the bundled file (sha256-checked),
else the Hugging Face cache's verified copy (no network: downloading is `download-weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fusionmamba_cli.checkpoints import hub
from fusionmamba_cli.checkpoints.manifest import WeightsEntry, bundled_weights_dir, load_manifest, verify_file
from fusionmamba_cli.errors import WeightsNotFoundError


def _installed_file(entry: WeightsEntry) -> Path:
    """The verified local file of a manifest entry: bundled first, then the download cache."""
    bundled = bundled_weights_dir() / entry.file
    if bundled.is_file():
        return verify_file(bundled, entry)
    cached = hub.find_cached(entry)
    if cached is not None:
        return cached
    raise WeightsNotFoundError(
        f"weights {entry.name!r} are not installed; run: fusionmamba download-weights {entry.name}")


def resolve_weights(source: str | os.PathLike) -> Path:
    """A weights file path from a path or a manifest name (bundled first, then the download cache)."""
    path = Path(source)
    if path.is_file():
        return path
    name = str(source)
    entry = load_manifest().entries.get(name)
    if entry is not None:
        return _installed_file(entry)
    if path.suffix or os.sep in name or name.startswith("."):
        raise WeightsNotFoundError(f"{name}: no such weights file")
    known = ", ".join(sorted(load_manifest().entries)) or "none installed"
    raise WeightsNotFoundError(f"unknown weights name {name!r} (known: {known})")


__all__ = ["resolve_weights"]

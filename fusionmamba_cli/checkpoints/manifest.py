"""Named weights: the manifest (`weights/manifest.json`), the bundled weights folder, sha256 checks.

Every named file is checked against the manifest's sha256 before it is used (`verify_file`).
Resolving a name to a file is `resolve.py`'s; downloading it, `hub.py`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fusionmamba_cli.errors import WeightsFormatError, WeightsNotFoundError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
TASKS = ("ir_vis", "ct_mri", "pet_mri", "spect_mri", "gfp_pc")


@dataclass(frozen=True)
class WeightsEntry:
    """One named weights file of the manifest."""

    name: str
    file: str
    sha256: str
    size: int = 0
    preset: str = ""
    tasks: tuple[str, ...] = ()
    bundled: bool = True
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Manifest:
    repo_id: str
    default: str | None
    task_defaults: dict[str, str]
    entries: dict[str, WeightsEntry]


def bundled_weights_dir() -> Path:
    """The weights folder: inside the installed wheel, else the source checkout's `weights/`."""
    override = os.environ.get("FUSIONMAMBA_WEIGHTS_DIR")
    if override:
        return Path(override)
    wheel_dir = _PACKAGE_DIR / "_bundled_weights"
    return wheel_dir if wheel_dir.is_dir() else _PACKAGE_DIR.parent / "weights"


@lru_cache(maxsize=4)
def _load_manifest_cached(path: str, mtime: float) -> Manifest:
    data = json.loads(Path(path).read_text())
    known = {"name", "file", "sha256", "size", "preset", "tasks", "bundled", "description"}
    entries = {}
    for item in data.get("weights", []):
        extra = {k: v for k, v in item.items() if k not in known}
        entries[item["name"]] = WeightsEntry(
            name=item["name"], file=item["file"], sha256=item["sha256"], size=int(item.get("size", 0)),
            preset=item.get("preset", ""), tasks=tuple(item.get("tasks", ())), bundled=bool(item.get("bundled", True)),
            description=item.get("description", ""), extra=extra,
        )
    return Manifest(
        repo_id=data.get("repo_id", ""), default=data.get("default"),
        task_defaults=dict(data.get("task_defaults", {})), entries=entries,
    )


def load_manifest(directory: Path | None = None) -> Manifest:
    """The manifest of `directory` (default: the bundled weights folder); empty when absent."""
    path = (directory or bundled_weights_dir()) / "manifest.json"
    if not path.is_file():
        return Manifest(repo_id="", default=None, task_defaults={}, entries={})
    return _load_manifest_cached(str(path), path.stat().st_mtime)


def list_weights() -> list[WeightsEntry]:
    """Every weights entry the manifest knows, bundled or download-only."""
    return list(load_manifest().entries.values())


def default_weights_for(task: str | None) -> str:
    """The weights name `fuse` uses for a task (or the general default without one)."""
    manifest = load_manifest()
    name = manifest.task_defaults.get(task) if task else manifest.default
    name = name or manifest.default
    if not name:
        raise WeightsNotFoundError(
            "no trained weights are installed for "
            + (f"task {task!r}" if task else "the general default")
            + "; pass --weights PATH (a .safetensors or the authors' .pth)"
        )
    return name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, entry: WeightsEntry) -> Path:
    """Raise unless `path` has the manifest's sha256."""
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise WeightsFormatError(f"{path}: sha256 {actual[:12]}... does not match the manifest's {entry.sha256[:12]}... for {entry.name!r}")
    return path

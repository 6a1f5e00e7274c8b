"""The data layout shared by `train` and `evaluate`: ROOT/<task>/<split>/<modality>/<name>.png,
with the two modality folders of a task named as in the task (e.g. ir_vis/test/ir, ir_vis/test/vis)."""

from __future__ import annotations

import os
from pathlib import Path

from fusionmamba_cli.errors import DataLayoutError
from fusionmamba_cli.fusion.pairs import images_by_stem  # the one pairing rule, shared with fuse
from fusionmamba_cli.tasks import get_task

__all__ = ["DATA_ENV", "default_data_root", "images_by_stem", "list_split_pairs", "split_dir"]

DATA_ENV = "FUSIONMAMBA_DATA"


def default_data_root() -> Path:
    """$FUSIONMAMBA_DATA, else ./data."""
    return Path(os.environ.get(DATA_ENV, "data"))


def split_dir(root: Path, task: str, split: str) -> Path:
    """ROOT/<task>/<split>, with a clear error when it is missing."""
    if not root.is_dir():
        raise DataLayoutError(f"{root}: data root not found (set --data or ${DATA_ENV})")
    path = root / task / split
    if not path.is_dir():
        raise DataLayoutError(f"{path}: no such task/split folder (expected ROOT/<task>/<split>/<modality>/<name>.png)")
    return path


def list_split_pairs(root: Path, task: str, split: str) -> list[tuple[str, Path, Path]]:
    """(name, first, second) in the task's (user) order, for names present in both modality folders
    (paired as `fuse` pairs two folders: `fusion.pairs.images_by_stem`)."""
    base = split_dir(root, task, split)
    folders = [base / modality for modality in get_task(task).modalities]
    for folder in folders:
        if not folder.is_dir():
            raise DataLayoutError(f"{folder}: modality folder missing")
    first, second = images_by_stem(folders[0]), images_by_stem(folders[1])
    return [(name, first[name], second[name]) for name in sorted(first.keys() & second.keys())]

"""Pairing the files of two input directories by file stem (extensions may differ)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fusionmamba_cli.imaging.io import INPUT_SUFFIXES


@dataclass(frozen=True)
class ImagePair:
    """Two registered sources in the user's (task) order, and the pair's name (the file stem)."""

    name: str
    first: Path
    second: Path


def images_by_stem(directory: Path, duplicates: list[Path] | None = None) -> dict[str, Path]:
    """The image files of a directory (readable suffixes, not hidden, not recursive) by file stem:
    the one pairing rule of fuse, evaluate and train. When two files share a stem (a.png, a.tif) the
    first in name order is kept and the others are appended to `duplicates` when given."""
    by_stem: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in INPUT_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in by_stem:
            if duplicates is not None:
                duplicates.append(path)
            continue
        by_stem[path.stem] = path
    return by_stem


def match_pairs(first_dir: Path, second_dir: Path) -> tuple[list[ImagePair], list[Path]]:
    """Pairs whose stems appear in both directories (sorted), and the files left unmatched."""
    dup1: list[Path] = []
    dup2: list[Path] = []
    first = images_by_stem(first_dir, dup1)
    second = images_by_stem(second_dir, dup2)
    common = sorted(first.keys() & second.keys())
    pairs = [ImagePair(stem, first[stem], second[stem]) for stem in common]
    unmatched = sorted([first[s] for s in first.keys() - second.keys()] + [second[s] for s in second.keys() - first.keys()])
    return pairs, unmatched + dup1 + dup2

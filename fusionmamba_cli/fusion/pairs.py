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


def _images_by_stem(directory: Path) -> tuple[dict[str, Path], list[Path]]:
    """Image files of a directory (not recursive) by stem; second return: ambiguous duplicates."""
    by_stem: dict[str, Path] = {}
    duplicates: list[Path] = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in INPUT_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in by_stem:
            duplicates.append(path)
            continue
        by_stem[path.stem] = path
    return by_stem, duplicates


def match_pairs(first_dir: Path, second_dir: Path) -> tuple[list[ImagePair], list[Path]]:
    """Pairs whose stems appear in both directories (sorted), and the files left unmatched."""
    first, dup1 = _images_by_stem(first_dir)
    second, dup2 = _images_by_stem(second_dir)
    common = sorted(first.keys() & second.keys())
    pairs = [ImagePair(stem, first[stem], second[stem]) for stem in common]
    unmatched = sorted([first[s] for s in first.keys() - second.keys()] + [second[s] for s in second.keys() - first.keys()])
    return pairs, unmatched + dup1 + dup2

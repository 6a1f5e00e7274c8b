"""`evaluate --montage DIR`: one comparison sheet per pair of a task split (source A, source B, then
each method's fused image, labelled), with a 4x zoom of the window where the methods differ most.
The composition is `imaging.montage`; this module pairs the files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionmamba_cli.datasets import images_by_stem, list_split_pairs
from fusionmamba_cli.errors import DataLayoutError
from fusionmamba_cli.imaging.io import read_image, write_image
from fusionmamba_cli.imaging.montage import compose_montage, window_of_largest_difference
from fusionmamba_cli.tasks import get_task


@dataclass
class MontageReport:
    """The sheets written, and the pairs left out because some method has no fused image for them."""

    written: list[Path] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def montage_images(sources: Sequence[tuple[str, np.ndarray]], fused: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """One sheet: sources then fused images. The zoom window is where the fused images differ most
    from each other, or, with a single fused image, from its sources."""
    compared = [pixels for _, pixels in fused] if len(fused) > 1 else [pixels for _, pixels in (*sources, *fused)]
    window = window_of_largest_difference(compared)
    return compose_montage([*sources, *fused], window)


def write_montages(
    root: Path, task: str, split: str, methods: Sequence[tuple[str, Path]], out_dir: Path,
    *, on_image: Callable[[str], None] | None = None,
) -> MontageReport:
    """`out_dir/<name>.png` for every pair of the split that every (label, fused folder) method has."""
    out_dir.mkdir(parents=True, exist_ok=True)
    modalities = get_task(task).modalities
    files = [(label, images_by_stem(folder)) for label, folder in methods]
    report = MontageReport()
    for name, first, second in list_split_pairs(root, task, split):
        if not all(name in found for _, found in files):
            report.incomplete.append(name)
            continue
        sources = [(modalities[0], read_image(first).pixels), (modalities[1], read_image(second).pixels)]
        fused = [(label, read_image(found[name]).pixels) for label, found in files]
        height, width = sources[0][1].shape[:2]
        for (label, pixels), path in zip(fused, (found[name] for _, found in files)):
            if pixels.shape[:2] != (height, width):
                raise DataLayoutError(f"{path}: size {pixels.shape[1]}x{pixels.shape[0]} differs from the sources' {width}x{height}")
        if sources[1][1].shape[:2] != (height, width):
            raise DataLayoutError(f"{second}: size differs from {first}")
        sheet = montage_images(sources, fused)
        report.written.append(write_image(out_dir / f"{name}.png", sheet.astype(np.float32) / 255, 8))
        if on_image is not None:
            on_image(name)
    return report


__all__ = ["MontageReport", "montage_images", "write_montages"]

"""Score fused images against the sources of a task split with the field's metrics and the three
visible-defect figures (clip, grain, grid): images fused by any method (a folder of files named
like the sources) or by our model on the fly.

Sources and fused images are reduced to grey exactly as the metric references do (integer BT.601
luma of the uint8 RGB; see `metrics.to_grey_uint8`), so numbers line up with published tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionmamba_cli.datasets import images_by_stem, list_split_pairs
from fusionmamba_cli.errors import DataLayoutError
from fusionmamba_cli.imaging.io import (
    read_image,
    to_integer,
    write_image,
)
from fusionmamba_cli.metrics import DEFECT_KEYS, SCORE_KEYS, load_grey, score_triplet, to_grey_uint8

PAPER_METRICS = ("VIF", "SCD", "Qabf", "SF", "MS-SSIM", "FMI")


@dataclass
class EvaluationResult:
    """Per-image scores of one method on one task split, with mean and std per metric; the defect
    figures (``DEFECT_KEYS``) are summarised by their median and max, as issue 15 judges them."""

    task: str
    split: str
    method: str
    metrics: list[str]
    per_image: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.per_image)

    def _values(self, key: str) -> np.ndarray:
        return np.array([row[key] for row in self.per_image if row.get(key) is not None], dtype=np.float64)

    def mean(self) -> dict[str, float | None]:
        return {k: (float(v.mean()) if (v := self._values(k)).size else None) for k in self.metrics}

    def std(self) -> dict[str, float | None]:
        return {k: (float(v.std()) if (v := self._values(k)).size else None) for k in self.metrics}

    @property
    def defect_keys(self) -> list[str]:
        """The defect figures among this result's metrics."""
        return [k for k in self.metrics if k in DEFECT_KEYS]

    def median(self) -> dict[str, float | None]:
        """Median over the images, for the defect figures only."""
        return {k: (float(np.median(v)) if (v := self._values(k)).size else None) for k in self.defect_keys}

    def max(self) -> dict[str, float | None]:
        """Largest value over the images, for the defect figures only."""
        return {k: (float(v.max()) if (v := self._values(k)).size else None) for k in self.defect_keys}

    def to_json(self) -> dict:
        out = {"task": self.task, "split": self.split, "n": self.n, "mean": self.mean(), "std": self.std()}
        if self.defect_keys:
            out["median"], out["max"] = self.median(), self.max()
        out["per_image"] = self.per_image
        if self.method:
            out["method"] = self.method
        if self.missing:
            out["missing"] = self.missing
        if self.extra:
            out["extra"] = self.extra
        return out


def resolve_metrics(names: Sequence[str] | None) -> list[str]:
    """Validated keys in canonical order: the 14 metrics, then clip, grain, grid (all for None);
    names in any case."""
    if not names:
        return list(SCORE_KEYS)
    by_folded = {key.casefold(): key for key in SCORE_KEYS}
    unknown = [n for n in names if n.casefold() not in by_folded]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(SCORE_KEYS)}")
    wanted = {by_folded[n.casefold()] for n in names}
    return [k for k in SCORE_KEYS if k in wanted]


def _fused_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: fused-image folder not found")
    return images_by_stem(folder)


def evaluate_fused_dir(
    root: Path, task: str, split: str, fused_dir: Path, metrics: Sequence[str] | None = None,
    *, on_image: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score a folder of already-fused images (any method's), paired with the sources by file stem."""
    keys = resolve_metrics(metrics)
    pairs = list_split_pairs(root, task, split)
    fused = _fused_files(fused_dir)
    result = EvaluationResult(task, split, fused_dir.name, keys)
    result.missing = [name for name, _, _ in pairs if name not in fused]
    result.extra = sorted(set(fused) - {name for name, _, _ in pairs})
    for name, first, second in pairs:
        if name in fused:
            f = load_grey(fused[name])
            a, b = load_grey(first), load_grey(second)
            if f.shape != a.shape:
                raise DataLayoutError(f"{fused[name]}: size {f.shape[1]}x{f.shape[0]} differs from the sources' {a.shape[1]}x{a.shape[0]}")
            result.per_image.append({"name": name, **score_triplet(a, b, f, keys)})
        if on_image is not None:
            on_image(name)
    return result


def fused_to_grey_uint8(pixels: np.ndarray) -> np.ndarray:
    """Our fused [0, 1] output as the metric references see its 8-bit file: quantise, then integer luma."""
    values = to_integer(pixels, 8)
    return to_grey_uint8(values) if values.ndim == 3 else values


def evaluate_model(
    fuser, root: Path, task: str, split: str, metrics: Sequence[str] | None = None,
    *, save_dir: Path | None = None, method: str = "fusionmamba", on_image: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Fuse every pair of the split with `fuser` (a `fusion.Fuser`) and score the results."""
    keys = resolve_metrics(metrics)
    result = EvaluationResult(task, split, method, keys)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for name, first, second in list_split_pairs(root, task, split):
        fused = fuser.fuse(read_image(first), read_image(second))
        if save_dir is not None:
            write_image(save_dir / f"{name}.png", fused.pixels, 8)
        f = fused_to_grey_uint8(fused.pixels)
        result.per_image.append({"name": name, **score_triplet(load_grey(first), load_grey(second), f, keys)})
        if on_image is not None:
            on_image(name)
    return result


def best_per_metric(results: Sequence[EvaluationResult]) -> dict[str, int | None]:
    """Index of the method with the highest mean per metric (every metric is higher-better); None
    for the defect figures, which are judged against thresholds, not ranked."""
    best: dict[str, int | None] = {}
    for key in results[0].metrics if results else []:
        if key in DEFECT_KEYS:
            best[key] = None
            continue
        means = [r.mean().get(key) for r in results]
        valid = [(v, i) for i, v in enumerate(means) if v is not None]
        best[key] = max(valid)[1] if valid else None
    return best


def evaluate_defects(
    root: Path, task: str, split: str, fused_dir: Path, *, on_image: Callable[[str], None] | None = None
) -> EvaluationResult:
    """The defect figures (clip, grain, grid) of a folder of fused images against a task split,
    paired as `evaluate_fused_dir` pairs them; `.median()` and `.max()` give issue 15's criteria."""
    return evaluate_fused_dir(root, task, split, fused_dir, DEFECT_KEYS, on_image=on_image)


__all__ = [
    "EvaluationResult", "PAPER_METRICS", "best_per_metric", "evaluate_defects", "evaluate_fused_dir", "evaluate_model",
    "fused_to_grey_uint8", "resolve_metrics",
]

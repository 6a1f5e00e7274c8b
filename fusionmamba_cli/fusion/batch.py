"""Fuse many pairs into an output folder: resumable (existing outputs skipped), atomic writes,
a failed pair never stops the batch, shardable across distributed ranks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fusionmamba_cli import distributed
from fusionmamba_cli.errors import FusionMambaError, ImageWriteError
from fusionmamba_cli.fusion.pairs import ImagePair
from fusionmamba_cli.fusion.pipeline import Fuser, align_sizes
from fusionmamba_cli.imaging.colour import has_chroma
from fusionmamba_cli.imaging.io import LoadedImage, read_image, write_image
from fusionmamba_cli.tasks import order_warning

if TYPE_CHECKING:  # plan.py imports this module
    from fusionmamba_cli.fusion.plan import BatchPlan


@dataclass
class PairOutcome:
    """What happened to one pair: status is "ok", "skipped" or "failed"."""

    name: str
    output: Path
    status: str
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. inputs that look swapped; still fused

    def to_json(self) -> dict:
        record = {"name": self.name, "output": str(self.output), "status": self.status, "seconds": round(self.seconds, 4)}
        if self.error:
            record["error"] = self.error
        if self.notes:
            record["notes"] = self.notes
        if self.warnings:
            record["warnings"] = self.warnings
        return record


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    """Whether an output is there; an unreadable path counts as absent (its write reports why)."""
    try:
        return path.exists()
    except OSError:
        return False


def _error_text(exc: BaseException, *paths: Path) -> str:
    """One line that starts with a file path: the error's own, else the pair's files."""
    if isinstance(exc, FusionMambaError):
        text = str(exc)
    elif isinstance(exc, MemoryError) or any(s in str(exc).lower() for s in ("out of memory", "not enough memory")):
        text = "out of memory (try a smaller --max-pixels or --tile, or --batch-size 1)"
    else:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{exc.__class__.__name__}: {first_line}" if first_line else exc.__class__.__name__
    text = " ".join(text.splitlines())
    if paths and not any(text.startswith(str(p)) for p in paths):
        text = f"{', '.join(str(p) for p in paths)}: {text}"
    return text


def _load_pair(pair: ImagePair, resize: bool, names: tuple[str, str]) -> tuple[LoadedImage, LoadedImage]:
    first, second = read_image(pair.first), read_image(pair.second)
    return align_sizes(first, second, resize, names)


def fuse_pairs(
    fuser: Fuser,
    pairs: Iterable[tuple[ImagePair, Path]],
    *,
    overwrite: bool = False,
    resize: bool = False,
    batch_size: int = 1,
    on_outcome: Callable[[PairOutcome], None] | None = None,
) -> list[PairOutcome]:
    """Fuse (pair, output path) items; same-size pairs go through the network `batch_size` at a time.

    Never raises for a bad pair: each failure becomes a "failed" outcome whose error starts with a
    file path, and the batch goes on. A network batch holds at most `fuser.max_pixels` pixels, so
    memory stays bounded whatever `batch_size` is (large images go alone, tiled).
    """
    outcomes: list[PairOutcome] = []

    def report(outcome: PairOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    pending: list[tuple[ImagePair, Path, LoadedImage, LoadedImage, float, list[str]]] = []

    def flush() -> None:
        if not pending:
            return
        start = time.perf_counter()
        try:
            fused = fuser.fuse_many([(a, b) for _, _, a, b, _, _ in pending])
        except Exception as exc:  # noqa: BLE001 - one bad batch must not end the run
            if len(pending) > 1:  # retry one by one so only the culprit fails
                items = list(pending)
                pending.clear()
                for item in items:
                    pending.append(item)
                    flush()
                return
            pair, out, _, _, read_s, warnings = pending[0]
            error = _error_text(exc, pair.first, pair.second)
            report(PairOutcome(pair.name, out, "failed", read_s + time.perf_counter() - start, error, warnings=warnings))
            pending.clear()
            return
        share = (time.perf_counter() - start) / len(pending)
        done = list(zip(pending, fused))
        pending.clear()  # before writing: an interrupt must not leave items to be written twice
        for (pair, out, _, _, read_s, warnings), image in done:
            t0 = time.perf_counter()
            try:
                write_image(out, image.pixels, image.bit_depth)
                outcome = PairOutcome(pair.name, out, "ok", read_s + share + time.perf_counter() - t0, notes=image.notes, warnings=warnings)
            except Exception as exc:  # noqa: BLE001
                outcome = PairOutcome(pair.name, out, "failed", read_s + share, _error_text(exc, out))
            report(outcome)  # outside the try: what the callback raises (stdout closed) ends the batch

    def pixels_of(item: tuple) -> int:
        return fuser.padded_pixels(*item[2].size_hw)

    for pair, out in pairs:
        start = time.perf_counter()
        if _same_file(out, pair.first) or _same_file(out, pair.second):
            report(PairOutcome(pair.name, out, "failed", 0.0, f"{out}: output would overwrite an input"))
            continue
        if not overwrite and _exists(out):
            report(PairOutcome(pair.name, out, "skipped", 0.0, notes=["output exists (use --overwrite)"]))
            continue
        try:
            first, second = _load_pair(pair, resize, fuser.task.modalities)
        except Exception as exc:  # noqa: BLE001
            report(PairOutcome(pair.name, out, "failed", time.perf_counter() - start, _error_text(exc, pair.first, pair.second)))
            continue
        warning = order_warning(fuser.task, has_chroma(first.pixels), has_chroma(second.pixels))
        item = (pair, out, first, second, time.perf_counter() - start, [warning] if warning else [])
        if pending and (
            pending[0][2].size_hw != first.size_hw
            or sum(map(pixels_of, pending)) + pixels_of(item) > fuser.max_pixels
        ):
            flush()
        pending.append(item)
        if len(pending) >= batch_size:
            flush()
    flush()
    return outcomes


def fuse_directory(
    fuser: Fuser,
    plan: BatchPlan,
    *,
    overwrite: bool = False,
    resize: bool = False,
    batch_size: int = 1,
    on_outcome: Callable[[PairOutcome], None] | None = None,
) -> list[PairOutcome]:
    """Fuse a `plan_batch` plan: alone, every item; under torchrun, this rank's share, after which
    rank 0 returns every rank's outcomes in the plan's order (the other ranks return []).

    `on_outcome` sees this rank's outcomes as they come. A single output file is replaced; in
    directory mode existing outputs are skipped unless `overwrite` (a rerun resumes)."""
    rank, world = distributed.get_rank(), distributed.get_world_size()
    outcomes = fuse_pairs(
        fuser, plan.shard(rank, world), overwrite=overwrite or not plan.directory_mode, resize=resize,
        batch_size=batch_size, on_outcome=on_outcome,
    )
    gathered = distributed.gather_to_rank0(outcomes)
    if rank != 0:
        return []
    everything = [o for part in gathered for o in part]
    if world > 1:  # back to the listing's order
        order = {out: i for i, (_, out) in enumerate(plan.items)}
        everything.sort(key=lambda o: order.get(o.output, len(order)))
    return everything

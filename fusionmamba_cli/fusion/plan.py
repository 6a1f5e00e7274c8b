"""What a `fuse A B -o OUT` call will do, worked out and checked before any work: two files to one
output file, or two folders (pairs matched by file stem) to an output folder."""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fusionmamba_cli import distributed
from fusionmamba_cli.errors import FusionMambaError, ImageWriteError, InvalidRequestError
from fusionmamba_cli.fusion.pairs import ImagePair, match_pairs
from fusionmamba_cli.imaging.io import IMAGE_SUFFIXES


class BatchPlanError(InvalidRequestError, ValueError):
    """Sources or output that cannot make a batch: missing, mixed file/folder, unwritable, an input as output."""



def output_path_for(pair: ImagePair, out_dir: Path, suffix: str) -> Path:
    """`out_dir/<name><suffix>`, refusing names that would escape `out_dir` (e.g. '../x', '/x')."""
    name = pair.name
    if (
        name in ("", ".", "..")
        or os.sep in name
        or (os.altsep and os.altsep in name)
        or "\0" in name
        or Path(name).name != name
    ):
        raise ImageWriteError(f"{name!r}: output name escapes the output directory")
    return out_dir / f"{name}{suffix}"

@dataclass
class BatchPlan:
    """(pair, output path) items in listing order, files without a partner, and the mode.

    A single output file is replaced when it exists (like other image tools); in directory mode
    existing outputs are skipped unless asked, so that a rerun resumes."""

    items: list[tuple[ImagePair, Path]]
    unmatched: list[Path] = field(default_factory=list)
    directory_mode: bool = True

    def shard(self, rank: int, world: int) -> list[tuple[ImagePair, Path]]:
        """The items one rank of `world` fuses: every world-th, from its rank on."""
        return distributed.shard(self.items, rank, world)


def _missing(path: Path) -> str:
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            return f"{path}: {'symbolic link loop' if exc.errno == errno.ELOOP else 'broken symbolic link'}"
    return f"{path}: no such file or directory"


def _check_writable(directory: Path) -> None:
    """Refuse up front an output folder we cannot write (read-only file system, permissions): one
    error instead of one failure per pair."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".fusionmamba-probe.", suffix=".part", dir=directory)
    except OSError as exc:
        raise BatchPlanError(f"{directory}: output directory is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchPlanError(f"{directory}: cannot create output directory ({exc.strerror or exc})") from None
    _check_writable(directory)


def _plan_file(first: Path, second: Path, output: Path) -> BatchPlan:
    if output.is_dir():
        raise BatchPlanError(f"{output}: is a directory; give an output file name for a single pair")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise BatchPlanError(f"{output}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
    _make_dir(output.parent)
    for source in (first, second):
        if output.exists() and os.path.samefile(output, source):
            raise BatchPlanError(f"-o {output}: is an input; choose another output file")
    return BatchPlan([(ImagePair(output.stem, first, second), output)], [], directory_mode=False)


def _plan_directories(first: Path, second: Path, output: Path, ext: str | None) -> BatchPlan:
    suffix = "." + (ext or "png").lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        raise BatchPlanError(f"--ext {ext}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
    if output.exists() and not output.is_dir():
        raise BatchPlanError(f"{output}: exists and is not a directory")
    _make_dir(output)
    try:
        pairs, unmatched = match_pairs(first, second)
    except OSError as exc:
        raise BatchPlanError(f"{exc.filename or first}: cannot list directory ({exc.strerror or exc})") from None
    items = []
    for pair in pairs:
        try:
            items.append((pair, output_path_for(pair, output, suffix)))
        except FusionMambaError as exc:  # cannot happen for names read from a directory; be safe
            raise BatchPlanError(str(exc)) from None
    return BatchPlan(items, unmatched, directory_mode=True)


def _plan_here(first: Path, second: Path, output: Path, ext: str | None) -> BatchPlan:
    for source in (first, second):
        if not source.exists():
            raise BatchPlanError(_missing(source))
    if first.is_dir() != second.is_dir():
        raise BatchPlanError(f"{first} and {second}: give two files or two directories, not one of each")
    if first.is_dir():
        return _plan_directories(first, second, output, ext)
    return _plan_file(first, second, output)


def plan_batch(first: Path, second: Path, output: Path, *, ext: str | None = None) -> BatchPlan:
    """Check the sources and the output (creating the output folder) and list the pairs.

    `ext` is the output format in directory mode (default png). Under torchrun, rank 0 lists and
    every rank gets that one plan (or raises the same `BatchPlanError`), so shards never overlap.
    """
    plan: BatchPlan | BatchPlanError | None = None
    if distributed.get_rank() == 0:
        try:
            plan = _plan_here(Path(first), Path(second), Path(output), ext)
        except BatchPlanError as exc:
            plan = exc
    plan = distributed.broadcast_from_rank0(plan)
    if isinstance(plan, BatchPlanError):
        raise plan
    return plan


__all__ = ["BatchPlan", "BatchPlanError", "plan_batch"]

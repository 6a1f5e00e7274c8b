"""`fusionmamba fuse A B -o OUT`: files or whole directories; under `torchrun` the pairs are
sharded across the ranks (each writes its own outputs, rank 0 prints the summary)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from fusionmamba_cli import distributed
from fusionmamba_cli.checkpoints import default_weights_for, load_model
from fusionmamba_cli.cli.common import (
    CompileOpt,
    CudaGraphsOpt,
    DeviceOpt,
    QuietOpt,
    ScanBackendOpt,
    TaskOpt,
    ThreadsOpt,
    UsageError,
    WeightsOpt,
    apply_scan_backend,
    console,
    resolve_device,
    task_value,
)
from fusionmamba_cli.cli.progress import PlainProgress
from fusionmamba_cli.errors import FusionMambaError
from fusionmamba_cli.fusion.batch import PairOutcome, fuse_pairs, output_path_for
from fusionmamba_cli.fusion.pairs import ImagePair, match_pairs
from fusionmamba_cli.fusion.pipeline import (
    DEFAULT_TILE_OVERLAP,
    MAX_PIXELS_ENV,
    Fuser,
    parse_pixels,
)
from fusionmamba_cli.imaging.io import IMAGE_SUFFIXES
from fusionmamba_cli.threads import set_threads

EXIT_SIGPIPE = 141  # what a shell reports for a writer whose reader went away
EXIT_INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


class Normalize(str, Enum):
    none = "none"
    minmax = "minmax"


class _StdoutClosed(Exception):
    """The reader of --json output went away (e.g. `| head`)."""


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7F: "\\x7f"}


def printable(text: object) -> str:
    """One safe terminal line: undecodable file-name bytes and control characters escaped."""
    value = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value.translate(_CONTROL)


def _usage(message: object) -> UsageError:
    """A usage error whose text prints literally (the app prints it as Rich markup)."""
    return UsageError(escape(printable(message)))


def _error_line(text: object) -> None:
    console.print(f"[red]error:[/red] {escape(printable(text))}")


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
        raise _usage(f"{directory}: output directory is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _plan(first: Path, second: Path, output: Path, ext: str | None) -> tuple[list[tuple[ImagePair, Path]], list[Path], bool]:
    """(pair, output) items, unmatched files, and whether this is directory mode."""
    for source in (first, second):
        if not source.exists():
            raise _usage(_missing(source))
    if first.is_dir() != second.is_dir():
        raise _usage(f"{first} and {second}: give two files or two directories, not one of each")
    if not first.is_dir():
        if output.is_dir():
            raise _usage(f"{output}: is a directory; give an output file name for a single pair")
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise _usage(f"{output}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
        parent = output.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _usage(f"{parent}: cannot create output directory ({exc.strerror or exc})") from None
        _check_writable(parent)
        for source in (first, second):
            if output.exists() and os.path.samefile(output, source):
                raise _usage(f"-o {output}: is an input; choose another output file")
        return [(ImagePair(output.stem, first, second), output)], [], False
    suffix = "." + (ext or "png").lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        raise _usage(f"--ext {ext}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
    if output.exists() and not output.is_dir():
        raise _usage(f"{output}: exists and is not a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _usage(f"{output}: cannot create output directory ({exc.strerror or exc})") from None
    _check_writable(output)
    try:
        pairs, unmatched = match_pairs(first, second)
    except OSError as exc:
        raise _usage(f"{exc.filename or first}: cannot list directory ({exc.strerror or exc})") from None
    items = []
    for pair in pairs:
        try:
            items.append((pair, output_path_for(pair, output, suffix)))
        except FusionMambaError as exc:  # cannot happen for names read from a directory; be safe
            raise _usage(str(exc)) from None
    return items, unmatched, True


def _max_pixels(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        pixels = parse_pixels(value)
    except ValueError:
        raise _usage(f"--max-pixels {value}: not a pixel count (e.g. 4000000, 4M or 2048x2048)") from None
    if pixels < 1:
        raise _usage(f"--max-pixels {value}: must be positive")
    return pixels


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (e.g. from torchrun when another rank fails, or `kill`) unwinds like Ctrl-C, so the
    temp file of a write in progress is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fuse_command(
    first: Annotated[Path, typer.Argument(help="First source (file or directory), in the task's order: ir, ct, mri (pet/spect), gfp.", show_default=False)],
    second: Annotated[Path, typer.Argument(help="Second source: vis, mri, pet, spect, pc.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (pair) or directory (two directories).", show_default=False)],
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Pairs per network call (directories).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs in an output directory (default: skip them, so a batch resumes). A single output file is always replaced.")] = False,
    resize: Annotated[bool, typer.Option("--resize", help="Resize the smaller source to the larger when sizes differ.")] = False,
    normalize: Annotated[Normalize, typer.Option("--normalize", help="minmax: stretch each output to [0, 1] like the authors' test script.")] = Normalize.none,
    ext: Annotated[str | None, typer.Option("--ext", help="Output format for directories (png, jpg, tif, bmp). Default png.")] = None,
    tile: Annotated[int | None, typer.Option("--tile", min=32, help="Fuse images larger than this in tiles of this size (default: automatic above --max-pixels).")] = None,
    tile_overlap: Annotated[int, typer.Option("--tile-overlap", min=0, help="Tile overlap in pixels, blended.")] = DEFAULT_TILE_OVERLAP,
    max_pixels: Annotated[
        str | None,
        typer.Option(
            "--max-pixels",
            help=f"Pixel budget per network call: larger images are tiled (e.g. 4M, 2048x2048). Default: ${MAX_PIXELS_ENV}, else worked out from the model and the device's memory.",
            show_default=False,
        ),
    ] = None,
    scan_backend: ScanBackendOpt = None,
    cuda_graphs: CudaGraphsOpt = True,
    compiled: CompileOpt = False,
    threads: ThreadsOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON Lines on stdout: one object per pair (name, output, status, seconds), nothing else. Read it with `python -m json.tool --json-lines`.")] = False,
    quiet: QuietOpt = False,
) -> int:
    """Fuse a registered pair, or every pair of two directories matched by file stem.

    Under `torchrun --nproc-per-node N -m fusionmamba_cli fuse ...` the pairs are split across the N
    processes (one GPU each on a CUDA machine); rank 0 prints the summary.
    """
    apply_scan_backend(scan_backend)
    pixels_budget = _max_pixels(max_pixels)
    set_threads(threads)
    _, world, local_rank = distributed.env_ranks()
    dev = resolve_device(device)
    if world > 1 and dev.type == "cuda" and device.strip().lower() in ("auto", "cuda"):
        dev = resolve_device(f"cuda:{local_rank}")
    rank, world, _ = distributed.init_distributed(backend="nccl" if dev.type == "cuda" else "gloo")
    try:
        with _terminate_as_interrupt():
            return _fuse(
                first, second, output, task_value(task), weights, dev, batch_size, overwrite, resize,
                normalize.value, ext, tile, tile_overlap, pixels_budget, cuda_graphs, compiled, json_output, quiet, rank,
                world,
            )
    finally:
        distributed.cleanup()


def _fuse(first, second, output, task, weights, dev, batch_size, overwrite, resize, normalize, ext, tile,
          tile_overlap, pixels_budget, cuda_graphs, compiled, json_output, quiet, rank, world) -> int:
    main = rank == 0
    # Rank 0 lists the folders and every rank gets that one list, so shards never overlap or miss.
    plan: tuple | UsageError | None = None
    if main:
        try:
            plan = _plan(first, second, output, ext)
        except UsageError as exc:
            plan = exc
    plan = distributed.broadcast_from_rank0(plan)
    if isinstance(plan, UsageError):
        if main:
            raise plan
        sys.exit(2)  # rank 0 prints the error
    items, unmatched, directory_mode = plan
    mine = distributed.shard(items, rank, world)
    name = weights or default_weights_for(task)
    model = load_model(name, device=dev)
    try:
        fuser = Fuser(model, task=task, device=dev, normalize=normalize, tile=tile, tile_overlap=tile_overlap,
                      max_pixels=pixels_budget, cuda_graphs=cuda_graphs, compiled=compiled)
    except ValueError as exc:  # a bad FUSIONMAMBA_MAX_PIXELS
        raise _usage(str(exc)) from None
    show = not quiet and not json_output and main
    if main and unmatched and not json_output:
        listed = ", ".join(printable(p.name) for p in unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        console.print(f"[yellow]warning:[/yellow] {len(unmatched)} file(s) without a partner: {escape(listed)}")
    if main and directory_mode and not items:
        console.print(f"[yellow]warning:[/yellow] no matching pairs in {escape(printable(first))} and {escape(printable(second))}")
    label = "fusing" if world == 1 else f"fusing (rank 0 of {world})"
    tally = _Tally()
    # A single output file is replaced, like other image tools do; in directories existing outputs
    # are skipped so that a rerun resumes.
    replace = overwrite or not directory_mode
    try:
        outcomes = _run(fuser, mine, replace, resize, batch_size, json_output, show and directory_mode, label, tally)
    except _StdoutClosed:
        return EXIT_SIGPIPE
    except KeyboardInterrupt:
        if not directory_mode:
            raise
        console.print(f"[red]interrupted[/red] after {tally.done} of {len(mine)} pairs; rerun the same command to resume")
        return EXIT_INTERRUPTED
    gathered = distributed.gather_to_rank0(outcomes)
    code = 0
    if main:
        everything = [o for part in gathered for o in part]
        if world > 1:  # back to the listing's order
            order = {out: i for i, (_, out) in enumerate(items)}
            everything.sort(key=lambda o: order.get(o.output, len(order)))
        code = _report(everything, json_output, quiet)
    return distributed.broadcast_from_rank0(code)


@dataclass
class _Tally:
    """Pairs finished so far (any status), for the message after an interrupt."""

    done: int = 0


def _run(fuser, items, overwrite, resize, batch_size, json_output, progress_bar, label="fusing",
         tally: _Tally | None = None) -> list[PairOutcome]:
    tally = tally if tally is not None else _Tally()

    def emit(outcome: PairOutcome) -> None:
        tally.done += 1
        if json_output:
            try:
                sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
                sys.stdout.flush()  # one write per line: lines of parallel ranks do not mix
            except BrokenPipeError:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())  # no second error when Python exits
                raise _StdoutClosed from None

    if not progress_bar:
        return fuse_pairs(fuser, items, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=emit)
    if not console.is_terminal:  # logs, CI, nohup: a live bar would print nothing until the summary
        plain = PlainProgress(console, label, len(items))

        def count(outcome: PairOutcome) -> None:
            emit(outcome)
            plain.advance()

        return fuse_pairs(fuser, items, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=count)
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("fuse", total=len(items))

        def advance(outcome: PairOutcome) -> None:
            emit(outcome)
            progress.advance(bar)

        return fuse_pairs(fuser, items, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=advance)


def _report(outcomes: list[PairOutcome], json_output: bool, quiet: bool) -> int:
    """Notes, one line per failed pair and the summary on stderr; exit 1 when any pair failed."""
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "ok" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    if not json_output:
        for o in outcomes:
            for warning in o.warnings:
                console.print(f"[yellow]warning:[/yellow] {escape(printable(o.name))}: {escape(printable(warning))}")
        if not quiet:
            for o in outcomes:
                if o.status == "ok":
                    for note in o.notes:
                        console.print(f"[dim]note:[/dim] {escape(printable(o.name))}: {escape(printable(note))}")
        for o in failed:
            _error_line(o.error or f"{o.name}: failed")
        if not quiet:
            summary = f"{done} fused, {skipped} skipped (exist), {len(failed)} failed"
            if len(outcomes) == 1 and done == 1:
                summary = f"wrote {printable(outcomes[0].output)} ({outcomes[0].seconds:.2f} s)"
            console.print(escape(summary))
    return 1 if failed else 0

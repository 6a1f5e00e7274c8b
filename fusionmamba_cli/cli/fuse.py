"""`fusionmamba fuse A B -o OUT`: files or whole directories; under `torchrun` the pairs are
sharded across the ranks (each writes its own outputs, rank 0 prints the summary)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
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
    NormalizeName,
    QuietOpt,
    ScanBackendOpt,
    TaskOpt,
    ThreadsOpt,
    UsageError,
    WeightsOpt,
    scan_backend_value,
    console,
    resolve_device,
    task_value,
)
from fusionmamba_cli.cli.progress import PlainProgress
from fusionmamba_cli.fusion.batch import PairOutcome, fuse_directory
from fusionmamba_cli.fusion.plan import BatchPlan, BatchPlanError, plan_batch
from fusionmamba_cli.fusion.pipeline import (
    DEFAULT_TILE_OVERLAP,
    MAX_PIXELS_ENV,
    Fuser,
    parse_pixels,
)
from fusionmamba_cli.threads import set_threads

EXIT_SIGPIPE = 141  # what a shell reports for a writer whose reader went away
EXIT_INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


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
    normalize: Annotated[NormalizeName, typer.Option("--normalize", help="minmax: stretch each output to [0, 1] like the authors' test script.")] = NormalizeName("none"),
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
    pixels_budget = _max_pixels(max_pixels)
    set_threads(threads)
    dev = resolve_device(device)  # under torchrun: this rank's GPU
    rank, world, _ = distributed.init_distributed(backend="nccl" if dev.type == "cuda" else "gloo")
    try:
        with _terminate_as_interrupt():
            plan = _plan(first, second, output, ext, main=rank == 0)
            model = load_model(weights or default_weights_for(task_value(task)), device=dev, scan_backend=scan_backend_value(scan_backend))
            try:
                fuser = Fuser(model, task=task_value(task), device=dev, normalize=normalize.value, tile=tile,
                              tile_overlap=tile_overlap, max_pixels=pixels_budget, cuda_graphs=cuda_graphs, compiled=compiled)
            except ValueError as exc:  # a bad FUSIONMAMBA_MAX_PIXELS
                raise _usage(str(exc)) from None
            if rank == 0 and not json_output:
                _warn_about_listing(plan, first, second)
            return _fuse(fuser, plan, overwrite=overwrite, resize=resize, batch_size=batch_size,
                         json_output=json_output, quiet=quiet, rank=rank, world=world)
    finally:
        distributed.cleanup()


def _plan(first: Path, second: Path, output: Path, ext: str | None, *, main: bool) -> BatchPlan:
    """The library's plan; its errors as one usage line from rank 0 (the other ranks exit 2 quietly)."""
    try:
        return plan_batch(first, second, output, ext=ext)
    except BatchPlanError as exc:
        if main:
            raise _usage(str(exc)) from None
        sys.exit(2)


def _warn_about_listing(plan: BatchPlan, first: Path, second: Path) -> None:
    if plan.unmatched:
        listed = ", ".join(printable(p.name) for p in plan.unmatched[:10]) + (" ..." if len(plan.unmatched) > 10 else "")
        console.print(f"[yellow]warning:[/yellow] {len(plan.unmatched)} file(s) without a partner: {escape(listed)}")
    if plan.directory_mode and not plan.items:
        console.print(f"[yellow]warning:[/yellow] no matching pairs in {escape(printable(first))} and {escape(printable(second))}")


def _fuse(fuser: Fuser, plan: BatchPlan, *, overwrite: bool, resize: bool, batch_size: int, json_output: bool,
          quiet: bool, rank: int, world: int) -> int:
    """Run the plan with this command's progress, JSON lines and interrupt handling; the exit code."""
    show = not quiet and not json_output and rank == 0 and plan.directory_mode
    label = "fusing" if world == 1 else f"fusing (rank 0 of {world})"
    tally = _Tally(total=len(plan.shard(rank, world)))
    try:
        outcomes = _run(fuser, plan, overwrite, resize, batch_size, json_output, show, label, tally)
    except _StdoutClosed:
        return EXIT_SIGPIPE
    except KeyboardInterrupt:
        if not plan.directory_mode:
            raise
        console.print(f"[red]interrupted[/red] after {tally.done} of {tally.total} pairs; rerun the same command to resume")
        return EXIT_INTERRUPTED
    code = _report(outcomes, json_output, quiet) if rank == 0 else 0
    return distributed.broadcast_from_rank0(code)


@dataclass
class _Tally:
    """Pairs of this rank: finished so far (any status) of its total, for the message after an interrupt."""

    done: int = 0
    total: int = 0


def _run(fuser: Fuser, plan: BatchPlan, overwrite: bool, resize: bool, batch_size: int, json_output: bool,
         progress_bar: bool, label: str, tally: _Tally) -> list[PairOutcome]:
    """`fuse_directory` with JSON lines on stdout and a progress display on stderr."""
    def run(on_outcome: Callable[[PairOutcome], None]) -> list[PairOutcome]:
        return fuse_directory(fuser, plan, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=on_outcome)

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
        return run(emit)
    if not console.is_terminal:  # logs, CI, nohup: a live bar would print nothing until the summary
        plain = PlainProgress(console, label, tally.total)

        def count(outcome: PairOutcome) -> None:
            emit(outcome)
            plain.advance()

        return run(count)
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("fuse", total=tally.total)

        def advance(outcome: PairOutcome) -> None:
            emit(outcome)
            progress.advance(bar)

        return run(advance)


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

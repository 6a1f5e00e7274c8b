"""`fusionmamba fuse A B -o OUT`: files or whole directories."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fusionmamba_cli.checkpoints import default_weights_for, load_model
from fusionmamba_cli.cli.common import (
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    ScanBackendOpt,
    TaskOpt,
    UsageError,
    WeightsOpt,
    apply_scan_backend,
    console,
    resolve_device,
    task_value,
)
from fusionmamba_cli.fusion.batch import PairOutcome, fuse_pairs, output_path_for
from fusionmamba_cli.fusion.pairs import ImagePair, match_pairs
from fusionmamba_cli.fusion.pipeline import DEFAULT_TILE_OVERLAP, Fuser
from fusionmamba_cli.imaging.io import IMAGE_SUFFIXES


class Normalize(str, Enum):
    none = "none"
    minmax = "minmax"


def _plan(first: Path, second: Path, output: Path, ext: str | None) -> tuple[list[tuple[ImagePair, Path]], list[Path], bool]:
    """(pair, output) items, unmatched files, and whether this is directory mode."""
    if not first.exists():
        raise UsageError(f"{first}: no such file or directory")
    if not second.exists():
        raise UsageError(f"{second}: no such file or directory")
    if first.is_dir() != second.is_dir():
        raise UsageError(f"{first} and {second}: give two files or two directories, not one of each")
    if not first.is_dir():
        if output.is_dir():
            raise UsageError(f"{output}: is a directory; give an output file name for a single pair")
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"{output}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
        return [(ImagePair(output.stem, first, second), output)], [], False
    suffix = "." + (ext or "png").lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(f"--ext {ext}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{output}: cannot create output directory ({exc.strerror})") from None
    pairs, unmatched = match_pairs(first, second)
    items = []
    for pair in pairs:
        items.append((pair, output_path_for(pair, output, suffix)))
    return items, unmatched, True


def fuse_command(
    first: Annotated[Path, typer.Argument(help="First source (file or directory), in the task's order: ir, ct, mri (pet/spect), gfp.", show_default=False)],
    second: Annotated[Path, typer.Argument(help="Second source: vis, mri, pet, spect, pc.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (pair) or directory (two directories).", show_default=False)],
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Pairs per network call (directories).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (default: skip them, so a batch resumes).")] = False,
    resize: Annotated[bool, typer.Option("--resize", help="Resize the smaller source to the larger when sizes differ.")] = False,
    normalize: Annotated[Normalize, typer.Option("--normalize", help="minmax: stretch each output to [0, 1] like the authors' test script.")] = Normalize.none,
    ext: Annotated[str | None, typer.Option("--ext", help="Output format for directories (png, jpg, tif, bmp). Default png.")] = None,
    tile: Annotated[int | None, typer.Option("--tile", min=32, help="Fuse in tiles of this size (default: automatic above the pixel budget).")] = None,
    tile_overlap: Annotated[int, typer.Option("--tile-overlap", min=0, help="Tile overlap in pixels, blended.")] = DEFAULT_TILE_OVERLAP,
    scan_backend: ScanBackendOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Fuse a registered pair, or every pair of two directories matched by file stem."""
    apply_scan_backend(scan_backend)
    dev = resolve_device(device)
    items, unmatched, directory_mode = _plan(first, second, output, ext)
    name = weights or default_weights_for(task_value(task))
    model = load_model(name, device=dev)
    fuser = Fuser(model, task=task_value(task), device=dev, normalize=normalize.value, tile=tile, tile_overlap=tile_overlap)
    show = not quiet and not json_output
    if unmatched and not json_output:
        listed = ", ".join(p.name for p in unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        console.print(f"[yellow]warning:[/yellow] {len(unmatched)} file(s) without a partner: {listed}")
    if directory_mode and not items:
        console.print(f"[yellow]warning:[/yellow] no matching pairs in {first} and {second}")
    outcomes = _run(fuser, items, overwrite, resize, batch_size, json_output, show and directory_mode)
    return _report(outcomes, json_output, quiet)


def _run(fuser, items, overwrite, resize, batch_size, json_output, progress_bar) -> list[PairOutcome]:
    def emit(outcome: PairOutcome) -> None:
        if json_output:
            typer.echo(json.dumps(outcome.to_json()))

    if not progress_bar:
        return fuse_pairs(fuser, items, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=emit)
    columns = (TextColumn("fusing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("fuse", total=len(items))

        def advance(outcome: PairOutcome) -> None:
            emit(outcome)
            progress.advance(bar)

        return fuse_pairs(fuser, items, overwrite=overwrite, resize=resize, batch_size=batch_size, on_outcome=advance)


def _report(outcomes: list[PairOutcome], json_output: bool, quiet: bool) -> int:
    """Summary on stderr; exit 1 when any pair failed."""
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "ok" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    if not json_output:
        for o in outcomes:
            if o.status == "failed":
                continue
            for note in o.notes:
                if not quiet and o.status == "ok":
                    console.print(f"[dim]note:[/dim] {o.name}: {note}")
        for o in failed:
            console.print(f"[red]error:[/red] {o.error}" if o.error and o.name in o.error else f"[red]error:[/red] {o.name}: {o.error}")
        if not quiet:
            summary = f"{done} fused, {skipped} skipped (exist), {len(failed)} failed"
            if len(outcomes) == 1 and done == 1:
                summary = f"wrote {outcomes[0].output} ({outcomes[0].seconds:.2f} s)"
            elif len(outcomes) == 1 and skipped == 1:
                summary = f"{outcomes[0].output} exists; skipped (use --overwrite)"
            console.print(summary)
    return 1 if failed else 0

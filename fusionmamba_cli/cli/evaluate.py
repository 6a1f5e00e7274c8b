"""`fusionmamba evaluate`: the field's fusion metrics on a task split, for our model or any method."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from fusionmamba_cli.checkpoints import default_weights_for, load_model
from fusionmamba_cli.cli.common import (
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    ScanBackendOpt,
    TaskName,
    ThreadsOpt,
    UsageError,
    WeightsOpt,
    scan_backend_value,
    console,
    resolve_device,
    stdout,
)
from fusionmamba_cli.datasets import default_data_root, list_split_pairs
from fusionmamba_cli.evaluation import EvaluationResult, best_per_metric, evaluate_fused_dir, evaluate_model, resolve_metrics
from fusionmamba_cli.evaluation_montage import write_montages
from fusionmamba_cli.fusion.pipeline import Fuser
from fusionmamba_cli.metrics import DEFECT_KEYS
from fusionmamba_cli.threads import set_threads


def _table(results: list[EvaluationResult]) -> Table:
    """Metrics as rows, methods as columns (mean ± std), the best mean per metric in bold; defect
    figures as median / max over the images."""
    first = results[0]
    table = Table(title=f"{first.task} / {first.split}  (n = {', '.join(str(r.n) for r in results)})")
    table.add_column("metric")
    for r in results:
        table.add_column(r.method, justify="right")
    best = best_per_metric(results) if len(results) > 1 else {}
    for key in first.metrics:
        cells = []
        for i, r in enumerate(results):
            if key in DEFECT_KEYS:
                median, top = r.median()[key], r.max()[key]
                text = "n/a" if median is None else f"{median:.4f} / {top:.4f}"
            else:
                mean, std = r.mean()[key], r.std()[key]
                text = "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}"
            cells.append(f"[bold green]{text}[/bold green]" if best.get(key) == i else text)
        table.add_row(f"{key} (median / max)" if key in DEFECT_KEYS else key, *cells)
    return table


def _write_csv(path: Path, results: list[EvaluationResult]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "name", *results[0].metrics])
        for r in results:
            for row in r.per_image:
                writer.writerow([r.method, row["name"], *(row.get(k) for k in r.metrics)])


def _folders(fused: list[Path] | None, compare: list[Path] | None, more: list[Path] | None) -> list[Path]:
    """Every fused folder to score, checked before any work (`--compare b c` leaves c as an argument)."""
    if more and not (fused or compare):
        raise UsageError(f"{more[0]}: unexpected argument (fused folders go after --fused or --compare)")
    folders = list(fused or []) + list(compare or []) + list(more or [])
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{escape(str(folder))}: fused-image folder not found")
    return folders


def _check_montage_dir(montage: Path, folders: list[Path], save_fused: Path | None) -> None:
    """The montage folder must not be one whose files it could replace (a fused folder, --save-fused)."""
    for folder in [*folders, *([save_fused] if save_fused else [])]:
        if montage.exists() and folder.exists() and os.path.samefile(montage, folder):
            raise UsageError(f"--montage {escape(str(montage))}: is also a fused-image folder; choose another")
    if montage.exists() and not montage.is_dir():
        raise UsageError(f"--montage {escape(str(montage))}: exists and is not a directory")


def evaluate_command(
    task: Annotated[TaskName, typer.Option("--task", "-t", help="Task whose split is scored.")],
    more: Annotated[list[Path] | None, typer.Argument(hidden=True, show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="Split folder.")] = "test",
    data: Annotated[Path | None, typer.Option("--data", help="Data root ROOT/<task>/<split>/<modality>/. Default $FUSIONMAMBA_DATA or ./data.")] = None,
    fused: Annotated[list[Path] | None, typer.Option("--fused", help="Folder(s) of already-fused images (any method), named like the sources: --fused a b c. Repeat or add --compare to compare methods.")] = None,
    compare: Annotated[list[Path] | None, typer.Option("--compare", help="More fused folders to put side by side: --compare b c (same as more --fused).")] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Comma-separated subset, any case, e.g. VIF,SCD,Qabf,SF,MS-SSIM,FMI or clip,grain,grid (defect figures). Default: all.")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    save_fused: Annotated[Path | None, typer.Option("--save-fused", help="Keep our model's fused images here.")] = None,
    montage: Annotated[Path | None, typer.Option("--montage", help="Write one labelled comparison PNG per pair here: the sources, each method at native size, and a 4x zoom of where the methods differ most.", show_default=False)] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write per-image rows to this CSV file.")] = None,
    scan_backend: ScanBackendOpt = None,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score fused images with VIF, SCD, Qabf, SF, MS-SSIM, FMI, EN, SD, MI, AG, SSIM, PSNR, CC and the defect figures clip, grain, grid."""
    set_threads(threads)
    root = data or default_data_root()
    try:
        keys = resolve_metrics([m.strip() for m in metrics.split(",") if m.strip()] if metrics else None)
    except ValueError as exc:
        raise UsageError(f"--metrics: {exc}") from None
    folders = _folders(fused, compare, more)
    if montage is not None:
        _check_montage_dir(montage, folders, save_fused)
    total = len(list_split_pairs(root, task.value, split))  # also validates the data layout early
    fuser = None
    if not folders:  # our model fuses the split: load it before any progress is drawn
        dev = resolve_device(device)
        model = load_model(weights or default_weights_for(task.value), device=dev, scan_backend=scan_backend_value(scan_backend))
        fuser = Fuser(model, task=task.value, device=dev)
    show = not quiet and not json_output
    results: list[EvaluationResult] = []
    with ExitStack() as stack:
        keep = save_fused
        if fuser is not None and montage is not None and keep is None:  # the montage reads our fusions back
            keep = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fusionmamba-eval-")))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True, disable=not show) as progress:
            for folder in folders:
                bar = progress.add_task(f"scoring {folder.name}", total=total)
                results.append(evaluate_fused_dir(root, task.value, split, folder, keys, on_image=lambda _n, b=bar: progress.advance(b)))
            if fuser is not None:
                bar = progress.add_task("fusing + scoring", total=total)
                results.append(evaluate_model(fuser, root, task.value, split, keys, save_dir=keep, on_image=lambda _n: progress.advance(bar)))
            if montage is not None:
                methods = [(r.method, folder) for r, folder in zip(results, folders or [keep])]
                bar = progress.add_task("montages", total=total)
                sheets = write_montages(root, task.value, split, methods, montage, on_image=lambda _n: progress.advance(bar))
    if not json_output:
        for r in results:
            if r.missing:
                console.print(f"[yellow]warning:[/yellow] {r.method}: {len(r.missing)} source pair(s) without a fused image: {', '.join(r.missing[:8])}")
            if r.extra:
                console.print(f"[yellow]warning:[/yellow] {r.method}: {len(r.extra)} fused file(s) match no source pair: {', '.join(r.extra[:8])}")
        if montage is not None and not quiet:
            left_out = f" ({len(sheets.incomplete)} pair(s) left out: not fused by every method)" if sheets.incomplete else ""
            console.print(escape(f"montages: {len(sheets.written)} in {montage}{left_out}"))
    if csv_path is not None:
        _write_csv(csv_path, results)
    if json_output:
        payload = results[0].to_json() if len(results) == 1 else {"task": task.value, "split": split, "methods": [r.to_json() for r in results]}
        typer.echo(json.dumps(payload))
    elif not quiet:
        stdout.print(_table(results))

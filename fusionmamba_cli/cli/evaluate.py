"""`fusionmamba evaluate`: the field's fusion metrics on a task split, for our model or any method."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from fusionmamba_cli.checkpoints import default_weights_for, load_model
from fusionmamba_cli.cli.common import (
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    ScanBackendOpt,
    TaskName,
    UsageError,
    WeightsOpt,
    scan_backend_value,
    console,
    resolve_device,
    stdout,
)
from fusionmamba_cli.datasets import default_data_root, list_split_pairs
from fusionmamba_cli.evaluation import EvaluationResult, best_per_metric, evaluate_fused_dir, evaluate_model, resolve_metrics
from fusionmamba_cli.fusion.pipeline import Fuser
from fusionmamba_cli.metrics import DEFECT_KEYS


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


def evaluate_command(
    task: Annotated[TaskName, typer.Option("--task", "-t", help="Task whose split is scored.")],
    split: Annotated[str, typer.Option("--split", help="Split folder.")] = "test",
    data: Annotated[Path | None, typer.Option("--data", help="Data root ROOT/<task>/<split>/<modality>/. Default $FUSIONMAMBA_DATA or ./data.")] = None,
    fused: Annotated[list[Path] | None, typer.Option("--fused", help="Folder of already-fused images (any method), named like the sources. Repeat to compare methods.")] = None,
    compare: Annotated[list[Path] | None, typer.Option("--compare", help="More fused folders to put side by side (same as repeating --fused).")] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Comma-separated subset, e.g. VIF,SCD,Qabf,SF,MS-SSIM,FMI or clip,grain,grid (defect figures). Default: all.")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    save_fused: Annotated[Path | None, typer.Option("--save-fused", help="Keep our model's fused images here.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write per-image rows to this CSV file.")] = None,
    scan_backend: ScanBackendOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score fused images with VIF, SCD, Qabf, SF, MS-SSIM, FMI, EN, SD, MI, AG, SSIM, PSNR, CC and the defect figures clip, grain, grid."""
    root = data or default_data_root()
    try:
        keys = resolve_metrics([m.strip() for m in metrics.split(",") if m.strip()] if metrics else None)
    except ValueError as exc:
        raise UsageError(f"--metrics: {exc}") from None
    folders = list(fused or []) + list(compare or [])
    total = len(list_split_pairs(root, task.value, split))  # also validates the data layout early
    show = not quiet and not json_output
    results: list[EvaluationResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True, disable=not show) as progress:
        for folder in folders:
            bar = progress.add_task(f"scoring {folder.name}", total=total)
            results.append(evaluate_fused_dir(root, task.value, split, folder, keys, on_image=lambda _n, b=bar: progress.advance(b)))
        if not folders:
            dev = resolve_device(device)
            model = load_model(weights or default_weights_for(task.value), device=dev,
                               scan_backend=scan_backend_value(scan_backend))
            fuser = Fuser(model, task=task.value, device=dev)
            bar = progress.add_task("fusing + scoring", total=total)
            results.append(evaluate_model(fuser, root, task.value, split, keys, save_dir=save_fused, on_image=lambda _n: progress.advance(bar)))
    if not json_output:
        for r in results:
            if r.missing:
                console.print(f"[yellow]warning:[/yellow] {r.method}: {len(r.missing)} source pair(s) without a fused image: {', '.join(r.missing[:8])}")
            if r.extra:
                console.print(f"[yellow]warning:[/yellow] {r.method}: {len(r.extra)} fused file(s) match no source pair: {', '.join(r.extra[:8])}")
    if csv_path is not None:
        _write_csv(csv_path, results)
    if json_output:
        payload = results[0].to_json() if len(results) == 1 else {"task": task.value, "split": split, "methods": [r.to_json() for r in results]}
        typer.echo(json.dumps(payload))
    elif not quiet:
        stdout.print(_table(results))

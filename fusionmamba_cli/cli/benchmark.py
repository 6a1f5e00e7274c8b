"""`fusionmamba benchmark`: parameters, GFLOPs, latency, throughput and peak memory per input size."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from fusionmamba_cli import benchmarking
from fusionmamba_cli.cli.common import (
    CompileOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DTypeName,
    JsonOpt,
    PresetName,
    ScanBackendOpt,
    UsageError,
    WeightsOpt,
    scan_backend_value,
    console,
    resolve_device,
    stdout,
)
from fusionmamba_cli.model import list_presets


def parse_size(text: str) -> tuple[int, int]:
    """`256` -> (256, 256); `480x640` -> (480, 640) as height x width."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", text)
    if not match:
        raise UsageError(f"--size {text!r}: give a side (256) or HEIGHTxWIDTH (480x640)")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if height < 1 or width < 1:
        raise UsageError(f"--size {text!r}: sides must be >= 1")
    return height, width


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _gflops(value: float) -> str:
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def render(report: dict) -> None:
    """The Rich table (stdout) for a `benchmarking.benchmark_report` document."""
    rows = report["rows"]
    first = rows[0]
    threads = f", {first['threads']} threads" if first.get("threads") else ""
    timed = any("latency_ms" in r or "error" in r for r in rows)
    header = (
        f"[bold]{report['model']}[/bold]: {report['params'] / 1e6:.2f} M parameters | {report['device']} "
        f"({report['device_name']}{threads}) | {report['dtype']} | scan backend {report['scan_backend']} | batch {report['batch']}"
    )
    if timed:
        header += f", warm-up {first['warmup']}, repeat {first['repeat']}"
        graphed = next((r["cuda_graphs"] for r in rows if "cuda_graphs" in r), False)
        if first["device"].startswith("cuda"):
            header += f", CUDA graphs {'on' if graphed else 'off'}"
        compile_times = [r["compile_s"] for r in rows if "compile_s" in r]
        if compile_times:
            header += f", torch.compile (first call {max(compile_times):.0f} s)"
    stdout.print(header)
    mem_kind = next((r.get("memory_kind") for r in rows if r.get("memory_kind")), "")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["size", "GFLOPs", "scan GF"]
    if timed:
        columns += ["ms", "IQR ms", "pairs/s", "GPU MiB" if mem_kind.startswith("cuda") else "RSS MiB", "+MiB"]
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=True)
    padded = False
    for r in rows:
        size = f"{r['height']}x{r['width']}"
        if (r["padded_height"], r["padded_width"]) != (r["height"], r["width"]):
            size += "*"
            padded = True
        cells = [size, _gflops(r["gflops"]), f"{_gflops(r['scan_gflops'])} ({100 * r['scan_share']:.0f}%)"]
        if "error" in r:
            cells += [f"[red]{r['error']}[/red]", "", "", "", ""]
        elif timed:
            cells += [
                _fmt(r["latency_ms"], 1),
                _fmt(r["latency_p75_ms"] - r["latency_p25_ms"], 1),
                _fmt(r["throughput_pairs_s"]),
                _fmt(r["peak_memory_mb"], 0),
                _fmt(r["memory_increase_mb"], 0),
            ]
        table.add_row(*cells)
    stdout.print(table)
    if padded:
        stdout.print(f"* run padded to a multiple of {rows[0]['size_multiple']} (the network pads, then crops)")
    if timed:
        stdout.print(
            "ms = median per call after warm-up; IQR = interquartile range; "
            + ("GPU MiB = peak CUDA memory allocated" if mem_kind.startswith("cuda") else "RSS MiB = peak process RSS (sampled)")
            + "; +MiB = increase over the level before the calls"
        )
    exps = report["exponents"]
    if len({r["padded_pixels"] for r in rows}) >= 2:
        parts = [f"GFLOPs {_fmt(exps['gflops'])}"]
        if timed:
            parts += [f"latency {_fmt(exps['latency'])}", f"memory increase {_fmt(exps['memory_increase'])}"]
        stdout.print("growth with pixels (fitted exponent, 1.00 = linear): " + ", ".join(parts))
    for note in report["notes"]:
        stdout.print(f"[dim]note: {note}[/dim]")


def benchmark_command(
    preset: Annotated[
        PresetName | None,
        typer.Option("--preset", "-p", metavar="PRESET", help=f"Network preset, random init (default compact): {', '.join(list_presets())}."),
    ] = None,
    weights: WeightsOpt = None,
    size: Annotated[
        list[str] | None,
        typer.Option("--size", "-s", help="Input side (256) or HEIGHTxWIDTH; repeat for several. Default 256.", show_default=False),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Pairs per network call.")] = 1,
    device: DeviceOpt = "auto",
    dtype: Annotated[DTypeName, typer.Option("--dtype", help="Weights and inputs dtype (the scan runs in fp32).")] = DTypeName("fp32"),
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls per size (at least one always runs).")] = 3,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Timed calls per size.")] = 10,
    flops_only: Annotated[bool, typer.Option("--flops-only", help="Count parameters and FLOPs only (instant, any size).")] = False,
    scan_backend: ScanBackendOpt = None,
    cuda_graphs: CudaGraphsOpt = True,
    compiled: CompileOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Measure the model's cost: parameters, GFLOPs (incl. the scan), latency, pairs/s, peak memory."""
    if preset and weights:
        raise UsageError("give --preset or --weights, not both")
    sizes = [parse_size(s) for s in (size or ["256"])]
    dev = resolve_device(device)
    model, label = benchmarking.build_model(preset=preset.value if preset else None, weights=weights, device=dev, dtype=dtype.value,
                                            scan_backend=scan_backend_value(scan_backend))

    def progress(hw: tuple[int, int]) -> None:
        if not json_output and not flops_only:
            console.print(f"[dim]measuring {hw[0]}x{hw[1]} ...[/dim]")

    rows = benchmarking.run_benchmark(
        model, sizes, batch=batch, warmup=warmup, repeat=repeat, time_it=not flops_only, label=label, on_size=progress,
        cuda_graphs=cuda_graphs, compiled=compiled,
    )
    report = benchmarking.benchmark_report(rows)
    if json_output:
        typer.echo(json.dumps(report))
        return
    render(report)

"""`fusionmamba info`: versions, device, scan backend and the available weights."""

from __future__ import annotations

import json
import platform

import torch
import typer
from rich.table import Table

from fusionmamba_cli import __version__
from fusionmamba_cli.checkpoints import bundled_weights_dir, list_weights
from fusionmamba_cli.checkpoints.hub import locate
from fusionmamba_cli.cli.common import (
    DeviceOpt,
    JsonOpt,
    ScanBackendOpt,
    scan_backend_value,
    resolve_device,
    stdout,
)
from fusionmamba_cli.ops.selective_scan import available_backends, resolve_backend


def collect_info(device: torch.device, scan_backend: str | None = None) -> dict:
    """Everything `info` reports, as a plain dict (`scan_backend`: the one asked for, None: the default)."""
    weights = []
    for entry in list_weights():
        where = locate(entry).where  # sha256-checked: bundled, cached, corrupt, remote-only, missing
        weights.append({"name": entry.name, "tasks": list(entry.tasks), "preset": entry.preset, "size": entry.size,
                        "where": where, "installed": where in ("bundled", "cached")})
    return {
        "fusionmamba": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "scan_backend": resolve_backend(scan_backend, device),
        "scan_backends_available": available_backends(device),
        "weights_dir": str(bundled_weights_dir()),
        "weights": weights,
    }


def info_command(device: DeviceOpt = "auto", scan_backend: ScanBackendOpt = None, json_output: JsonOpt = False) -> None:
    """Show versions, the device and scan backend that would be used, and the available weights."""
    data = collect_info(resolve_device(device), scan_backend_value(scan_backend))
    if json_output:
        typer.echo(json.dumps(data))
        return
    table = Table(show_header=False, box=None)
    for key in ("fusionmamba", "python", "torch", "device", "gpu", "scan_backend"):
        if data[key] is not None:
            table.add_row(key, str(data[key]))
    table.add_row("scan backends here", ", ".join(data["scan_backends_available"]))
    table.add_row("weights folder", data["weights_dir"])
    stdout.print(table)
    weights = Table(title="weights", show_lines=False)
    for column in ("name", "tasks", "preset", "MB", "where"):
        weights.add_column(column)
    for w in data["weights"]:
        weights.add_row(w["name"], ",".join(w["tasks"]), w["preset"], f"{w['size'] / 1e6:.1f}", w["where"])
    stdout.print(weights if data["weights"] else "weights: none installed")

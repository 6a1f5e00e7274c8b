"""Options, console and helpers shared by the commands."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated

import torch
import typer
from rich.console import Console

from fusionmamba_cli.ops.selective_scan import BACKEND_NAMES
from fusionmamba_cli.tasks import TASK_NAMES

# Human-facing output goes to stderr so stdout stays clean for --json and pipelines.
console = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

TaskName = Enum("TaskName", {name: name for name in TASK_NAMES}, type=str)  # type: ignore[misc]


ScanBackendName = Enum("ScanBackendName", {name: name for name in BACKEND_NAMES}, type=str)  # type: ignore[misc]


TaskOpt = Annotated[
    TaskName | None,
    typer.Option("--task", "-t", help="Fusion task: picks the task's weights and the input order.", show_default=False),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", "-w", help="Weights name (see `fusionmamba weights list`) or file (.safetensors / authors' .pth)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="auto, cpu, cuda or cuda:N.")]
ScanBackendOpt = Annotated[
    ScanBackendName | None,
    typer.Option("--scan-backend", help="Force a selective-scan backend (default: $FUSIONMAMBA_SCAN_BACKEND or auto)."),
]
CudaGraphsOpt = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="On a GPU, replay one captured CUDA graph per input size (much faster for small images). "
        "FUSIONMAMBA_CUDA_GRAPHS=0 turns it off everywhere.",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="Run the network through torch.compile: faster per pair on a GPU (1.6-1.9x on an H100, with CUDA graphs), "
        "but each new input size first compiles for 1-3 minutes. For many same-size pairs; GPU only.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout, nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")]


class UsageError(Exception):
    """A bad command-line value: one red line, exit code 2."""


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda if present else cpu; validate explicit choices."""
    choice = device.strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except RuntimeError:
        raise UsageError(f"--device {device!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device!r}: only cpu and cuda are supported")
    return dev


def apply_scan_backend(backend: ScanBackendName | None) -> None:
    """Make a --scan-backend choice visible to the dispatcher (argument beats the environment)."""
    if backend is not None:
        os.environ["FUSIONMAMBA_SCAN_BACKEND"] = backend.value


def task_value(task: TaskName | None) -> str | None:
    return task.value if task is not None else None

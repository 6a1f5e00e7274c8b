"""Options, console and helpers shared by the commands."""

from __future__ import annotations

import os
from collections.abc import Iterable
from enum import Enum
from typing import Annotated

import torch
import typer
from rich.console import Console

from fusionmamba_cli.ops.selective_scan import BACKEND_NAMES
from fusionmamba_cli.benchmarking import DTYPES
from fusionmamba_cli.devices import DeviceError, pick_device
from fusionmamba_cli.fusion.pipeline import NORMALIZE_MODES
from fusionmamba_cli.model import list_presets
from fusionmamba_cli.tasks import TASK_NAMES

# Human-facing output goes to stderr so stdout stays clean for --json and pipelines.
console = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum of one of the library's closed sets, for a Typer option: the set is defined once,
    in the library, and the command line offers exactly it."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


TaskName = choices("TaskName", TASK_NAMES)
PresetName = choices("PresetName", list_presets())
NormalizeName = choices("NormalizeName", NORMALIZE_MODES)
DTypeName = choices("DTypeName", DTYPES)
ScanBackendName = choices("ScanBackendName", BACKEND_NAMES)


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
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for the network. Default: $OMP_NUM_THREADS, else the usable CPUs minus the "
        "1-minute load average (at least 1): on a busy machine extra threads only wait.",
        show_default=False,
    ),
]


class UsageError(Exception):
    """A bad command-line value: one red line, exit code 2."""


def resolve_device(device: str) -> torch.device:
    """The library's one device rule (`devices.pick_device`), its errors as usage errors."""
    try:
        return pick_device(device)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def scan_backend_value(backend: ScanBackendName | None) -> str | None:
    """The --scan-backend choice as the library takes it (None: $FUSIONMAMBA_SCAN_BACKEND or auto)."""
    return backend.value if backend is not None else None


def task_value(task: TaskName | None) -> str | None:
    return task.value if task is not None else None

"""Model cost: parameters, FLOPs, latency, throughput and peak memory, and how they grow with size.

Library side of `fusionmamba benchmark` (no Typer, no Rich). Results are a list of plain dicts, one
per input size (timm `benchmark.py` style), plus `summarize` for the fitted growth exponents.

FLOPs
    `count_flops` runs the network once on a *meta-device* copy (shapes only, no arithmetic, no
    memory), under `torch.utils.flop_counter.FlopCounterMode`. That counter sees matmuls, convs and
    einsums (2 FLOPs per multiply-add); it does not see element-wise ops (activations, norms, adds)
    nor opaque kernels. The selective scan itself is therefore left out of the counted part (on
    meta tensors the dispatcher only propagates shapes, so no backend's internal einsums are
    counted) and added analytically, per scan the dispatcher reports (`observe_scans`): on a
    (B, D, H, W) map, K = 4 ES2D directions, KD = 4 * D channels, N = d_state and
    L = ceil(H/2) * ceil(W/2) steps:

        scan FLOPs = 9 * B * KD * N * L  +  B * KD * L

    About 9 operations per (channel, state, step): the discretisation delta*A and its exp, the
    input term delta*B*u, the state update decay*h + input, and the output dot C.h (multiply and
    add); 9 is the constant of mamba's `flops_selective_scan_ref`, which VMamba also uses. The
    second term is the D skip (y += D*u).

Latency
    `measure_latency`: warm-up calls, then `repeat` timed calls; CUDA events around each call on a
    GPU (synchronised), `time.perf_counter` on CPU. Median, quartiles, min and max, in ms per call
    (one call = `batch` pairs).

Peak memory
    Measured over the untimed calls (the first call and the other warm-ups), never
    the timed ones: the CPU sampler thread would otherwise share the cores it is timing.
    CUDA: `torch.cuda.max_memory_allocated` over those calls (after a reset), plus the
    allocated memory before the calls (weights, inputs) so the increase is the activations.
    CPU: the process's resident set size, sampled every 2 ms by a background thread reading
    /proc/self/statm during those calls (peak of the current RSS, not `ru_maxrss`, which
    is a lifetime high-water mark that cannot go down between sizes); freed heap is handed back
    (glibc `malloc_trim`) before each size so the baseline RSS is not inflated by the previous one.
    Where /proc is absent the `resource.getrusage(RUSAGE_SELF).ru_maxrss` high-water mark is
    reported instead. `memory_kind` in each row says which of the three was used.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fusionmamba_cli.checkpoints import load_model
from fusionmamba_cli.errors import BackendUnavailableError, is_out_of_memory
from fusionmamba_cli.model import FusionMamba, create_model
from fusionmamba_cli.model.compiled import CompiledForward
from fusionmamba_cli.model.graphed import GraphedForward
from fusionmamba_cli.ops.selective_scan import ScanCall, observe_scans, resolve_backend

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCAN_FLOPS_PER_STATE = 9  # per (channel, state, step); see the module docstring
PAPER_TABLE6 = {  # Xie et al., Table 6: one IR-VIS pair on an RTX 3090 (input size not stated)
    "U2Fusion": {"gflops": 345.75, "seconds": 0.20},
    "IFCNN": {"gflops": 77.94, "seconds": 0.19},
    "IFT": {"gflops": 184.56, "seconds": 0.36},
    "SwinFusion": {"gflops": 135.17, "seconds": 0.23},
    "FusionMamba": {"gflops": 16.50, "seconds": 0.13},
}
_MB = 1024 * 1024

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _padded(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scan_flops(batch: int, channels: int, d_state: int, length: int, *, with_d: bool = True) -> int:
    """Analytic FLOPs of one selective scan over `channels` (= K*D) sequences of `length` steps."""
    flops = SCAN_FLOPS_PER_STATE * batch * channels * d_state * length
    return flops + (batch * channels * length if with_d else 0)


@contextmanager
def _record_meta_scans() -> Iterator[list[ScanCall]]:
    """Record every selective scan on meta tensors run inside the block (the FLOP count's meta copy;
    scans on real devices elsewhere in the process are not its own)."""
    calls: list[ScanCall] = []

    def record(call: ScanCall) -> None:
        if call.device.type == "meta":
            calls.append(call)

    with observe_scans(record):
        yield calls


def _meta_copy(model: nn.Module) -> nn.Module:
    """The same network on the meta device, without copying (or allocating) any weights."""
    memo: dict[int, object] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo).eval()


def count_flops(model: nn.Module, size: Size, batch: int = 1) -> dict:
    """FLOPs of one forward on a (batch, 1, H, W) pair: FlopCounterMode total + analytic scan FLOPs.

    Runs on a meta-device copy, so any size is counted instantly without memory. Sizes that are not
    multiples of `model.size_multiple` are counted as the model runs them: padded.
    """
    height, width = _hw(size)
    meta = _meta_copy(model)
    dtype = next(model.parameters()).dtype
    x = torch.zeros(batch, 1, height, width, device="meta", dtype=dtype)
    with torch.inference_mode(), _record_meta_scans() as calls, FlopCounterMode(display=False) as counter:
        meta(x, x)
    counted = int(counter.get_total_flops())
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    scan = sum(scan_flops(c.batch, c.channels, c.d_state, c.length, with_d=c.has_d) for c in calls)
    total = counted + scan
    return {
        "flops": total,
        "gflops": total / 1e9,
        "counted_gflops": counted / 1e9,
        "scan_gflops": scan / 1e9,
        "scan_share": scan / total if total else 0.0,
        "scan_calls": len(calls),
        "gflops_by_op": {op: n / 1e9 for op, n in sorted(by_op.items())},
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 3,
    repeat: int = 10,
) -> dict:
    """Time `fn()` after `warmup` untimed calls: median, quartiles, min, max in ms per call."""
    device = torch.device(device)
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    for _ in range(max(0, warmup)):
        fn()
    _sync(device)
    times: list[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeat):
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    if len(times) >= 2:
        p25, _, p75 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        p25 = p75 = times[0]
    return {
        "latency_ms": statistics.median(times),
        "latency_p25_ms": p25,
        "latency_p75_ms": p75,
        "latency_min_ms": min(times),
        "latency_max_ms": max(times),
        "latency_mean_ms": statistics.fmean(times),
        "timer": "cuda_events" if device.type == "cuda" else "perf_counter",
        "times_ms": times,
    }


def _current_rss() -> int | None:
    """Current resident set size in bytes (Linux /proc), or None."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Peak memory over a block: CUDA max allocated, or sampled process RSS on CPU (see module doc).

    After the block: `peak_bytes`, `baseline_bytes` (before it) and `kind`.
    """

    def __init__(self, device: torch.device | str, interval_s: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.kind = ""
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _current_rss()
            if rss is not None and rss > self.peak_bytes:
                self.peak_bytes = rss
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            self.kind = "cuda_max_allocated"
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        elif _current_rss() is not None:
            self.kind = "rss_sampled"
            self.baseline_bytes = self.peak_bytes = _current_rss() or 0
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()
        else:
            self.kind = "ru_maxrss"
            self.baseline_bytes = _maxrss_bytes()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _current_rss() or 0)
        else:
            self.peak_bytes = _maxrss_bytes()


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    key = name.strip().lower()
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


def build_model(
    *,
    preset: str | None = None,
    weights: str | None = None,
    device: torch.device | str = "cpu",
    dtype: str | torch.dtype = "fp32",
    seed: int = 0,
    scan_backend: str | None = None,
) -> tuple[FusionMamba, str]:
    """(model in eval mode on device/dtype, label). Random init from a preset (fine for cost), or weights;
    `scan_backend` forced on it (None: the dispatcher's default)."""
    if preset and weights:
        raise ValueError("give a preset or weights, not both")
    torch_dtype = resolve_dtype(dtype)
    if weights:
        model = load_model(weights)
        label = f"weights:{weights}"
    else:
        torch.manual_seed(seed)
        preset = preset or "compact"
        model = create_model(preset)
        label = preset
    model.set_scan_backend(scan_backend)
    model = model.eval().to(device=device, dtype=torch_dtype)
    return model, label


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmark(
    model: FusionMamba,
    sizes: Sequence[Size],
    *,
    batch: int = 1,
    warmup: int = 3,
    repeat: int = 10,
    time_it: bool = True,
    label: str = "",
    on_size: Callable[[tuple[int, int]], None] | None = None,
    cuda_graphs: bool = True,
    compiled: bool = False,
) -> list[dict]:
    """One row per size: params, FLOPs (incl. scan), latency, throughput, peak memory.

    The model's device and dtype are used as they are (see `build_model`). `time_it=False` counts
    FLOPs only (no forward on the device). Out-of-memory at one size is recorded in that row's
    `error` and the next size still runs. `cuda_graphs`: time replays of a captured CUDA graph on a
    GPU (what `fuse` does); the row's `cuda_graphs` says whether they were used. `compiled`: through
    torch.compile (`compile_s` = the first call, compiling included; not part of the latency).
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    dtype_name = next((k for k, v in DTYPES.items() if v == dtype), str(dtype).removeprefix("torch."))
    multiple = model.size_multiple
    params = count_parameters(model)
    common = {
        "model": label,
        "params": params,
        "device": str(device),
        "device_name": _device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "dtype": dtype_name,
        "scan_backend": resolve_backend(model.scan_backend, device),
        "batch": batch,
        "warmup": warmup,
        "repeat": repeat,
        "torch": torch.__version__,
    }
    rows = []
    for size in sizes:
        height, width = _hw(size)
        if on_size is not None:
            on_size((height, width))
        row = dict(common)
        row.update(
            {
                "height": height,
                "width": width,
                "pixels": height * width,
                "padded_pixels": _padded(height, multiple) * _padded(width, multiple),
                "size_multiple": multiple,
                "padded_height": _padded(height, multiple),
                "padded_width": _padded(width, multiple),
            }
        )
        flops = count_flops(model, (height, width), batch)
        row.update({k: v for k, v in flops.items() if k != "flops"})
        row["gflops_per_pair"] = flops["gflops"] / batch
        if time_it:
            row.update(_time_one(model, height, width, batch, device, dtype, warmup, repeat, cuda_graphs, compiled))
        rows.append(row)
    return rows


def _release_cpu_heap() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`) so the next RSS baseline is honest."""
    if platform.system() != "Linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _time_one(
    model: FusionMamba, height: int, width: int, batch: int, device: torch.device, dtype: torch.dtype, warmup: int,
    repeat: int, cuda_graphs: bool = True, compiled: bool = False,
) -> dict:
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(batch, 1, height, width, generator=gen).to(device=device, dtype=dtype)
    x2 = torch.rand(batch, 1, height, width, generator=gen).to(device=device, dtype=dtype)
    compiled_forward = CompiledForward(model, enabled=compiled)
    runner = GraphedForward(compiled_forward, enabled=cuda_graphs)

    def forward() -> torch.Tensor:
        return runner(x1, x2)

    _release_cpu_heap()
    try:
        with torch.inference_mode():
            # Peak memory over the untimed calls only: on CPU it is sampled by a thread that, run
            # during the timed calls, took ~10 % of a 2-core machine's time (83 vs 94 ms at 256x256).
            with PeakMemory(device) as memory:
                first_call = time.perf_counter()
                try:
                    forward()  # first (warm-up) call: surfaces dtype/device problems before timing
                except RuntimeError as exc:
                    if is_out_of_memory(exc):
                        raise
                    if dtype != torch.float32:
                        name = str(dtype).removeprefix("torch.")
                        raise BackendUnavailableError(
                            f"{name} is not supported on {device.type} for this model here "
                            f"({str(exc).splitlines()[0][:200]}); use fp32" + (" or bf16" if dtype == torch.float16 else "")
                        ) from None
                    raise
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                first_call_s = time.perf_counter() - first_call
                if device.type == "cuda" and runner.enabled:
                    forward()  # a shape's second call captures its CUDA graph: never timed
                for _ in range(max(0, warmup - 1)):
                    forward()  # the other warm-up calls, inside the memory window
            latency = measure_latency(forward, device, warmup=0, repeat=repeat)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc) and not isinstance(exc, MemoryError):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"error": "out of memory"}
    median_s = latency["latency_ms"] / 1e3
    return {
        **latency,
        "cuda_graphs": device.type == "cuda" and runner.enabled,
        "compiled": compiled_forward.used,
        **({"compile_s": first_call_s} if compiled_forward.used else {}),
        "ms_per_pair": latency["latency_ms"] / batch,
        "throughput_pairs_s": batch / median_s if median_s > 0 else float("inf"),
        "peak_memory_mb": memory.peak_bytes / _MB,
        "memory_baseline_mb": memory.baseline_bytes / _MB,
        "memory_increase_mb": max(0, memory.peak_bytes - memory.baseline_bytes) / _MB,
        "memory_kind": memory.kind,
    }


def fit_exponent(pixels: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(values) on log(pixels): values ~ pixels**slope. None if < 2 points."""
    pairs = [(math.log(p), math.log(v)) for p, v in zip(pixels, values) if p > 0 and v is not None and v > 0]
    if len(pairs) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in pairs)
    mean_y = statistics.fmean(y for _, y in pairs)
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in pairs) / sxx


def summarize(rows: Sequence[dict]) -> dict:
    """Growth exponents for GFLOPs, latency and memory increase vs the pixels the network runs on
    (after padding to `size_multiple`); None where fewer than 2 distinct sizes."""
    ok = [r for r in rows if "error" not in r]

    def exponent(key: str) -> float | None:
        usable = [r for r in ok if r.get(key) is not None]
        if len({r["padded_pixels"] for r in usable}) < 2:
            return None
        return fit_exponent([r["padded_pixels"] for r in usable], [r[key] for r in usable])

    return {
        "gflops": exponent("gflops"),
        "latency": exponent("latency_ms"),
        "memory_increase": exponent("memory_increase_mb"),
    }


FLOPS_NOTE = (
    "GFLOPs = torch FlopCounterMode (matmul/conv/einsum, 2 FLOPs per multiply-add; element-wise ops "
    "not counted) + the selective scan's analytic FLOPs, 9*B*KD*N*L + B*KD*L per scan call, which "
    "FlopCounterMode cannot see."
)


def benchmark_report(rows: Sequence[dict]) -> dict:
    """The JSON document: the rows, the fitted exponents and the counting note."""
    first = rows[0] if rows else {}
    return {
        "model": first.get("model"),
        "params": first.get("params"),
        "device": first.get("device"),
        "device_name": first.get("device_name"),
        "dtype": first.get("dtype"),
        "scan_backend": first.get("scan_backend"),
        "batch": first.get("batch"),
        "rows": list(rows),
        "exponents": summarize(rows),
        "notes": [FLOPS_NOTE],
    }


__all__ = [
    "DTYPES",
    "FLOPS_NOTE",
    "PAPER_TABLE6",
    "PeakMemory",
    "benchmark_report",
    "build_model",
    "count_flops",
    "count_parameters",
    "fit_exponent",
    "measure_latency",
    "resolve_dtype",
    "run_benchmark",
    "scan_flops",
    "summarize",
]

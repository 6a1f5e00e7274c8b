"""GPU probe for the full-model latency goal: CUDA graphs alone vs torch.compile + CUDA graphs, and a
kernel profile of one forward (which kernels the remaining milliseconds go to).

Usage (GPU machine): [MODES=default,max-autotune-no-cudagraphs] python3 bench/compile_probe.py OUT.json [preset ...]
Writes OUT.json after every measurement, so a cut call still returns what it finished.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from fusionmamba_cli.model import create_model
from fusionmamba_cli.model.graphed import GraphedForward


def _median_ms(fn, warmup: int = 10, repeat: int = 50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _profile(model, x1, x2, top: int = 25) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x1, x2)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(x1, x2)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events)
    count = sum(e.count for e in events)
    rows = sorted(events, key=lambda e: -e.self_device_time_total)[:top]
    return {"kernels": count, "gpu_ms": total / 1000,
            "top": [(e.key[:90], e.count, round(e.self_device_time_total / 1000, 4)) for e in rows]}


def main() -> None:
    out = sys.argv[1]
    presets = sys.argv[2:] or ["compact", "official"]
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}

    def save() -> None:
        with open(out, "w") as handle:
            json.dump(report, handle, indent=1)

    for preset in presets:
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{preset}/{str(dtype).split('.')[-1]}"
            model = create_model(preset).cuda().eval().to(dtype)
            x1 = torch.rand(1, 1, 256, 256, device="cuda", dtype=dtype)
            x2 = torch.rand_like(x1)
            row: dict = {}
            graphed = GraphedForward(model)
            with torch.inference_mode():
                row["graphs_ms"] = _median_ms(lambda: graphed(x1, x2))
                reference = graphed(x1, x2).float()
            if dtype == torch.float32:
                row["profile"] = _profile(model, x1, x2)
            report[key] = row
            save()
            for mode in os.environ.get("MODES", "default").split(","):
                try:
                    torch._dynamo.reset()
                    compiled = torch.compile(model, mode=mode, dynamic=False)
                    start = time.perf_counter()
                    with torch.inference_mode():
                        compiled(x1, x2)
                        torch.cuda.synchronize()
                    row[f"compile_s[{mode}]"] = round(time.perf_counter() - start, 1)
                    graphed_c = GraphedForward(compiled)
                    with torch.inference_mode():
                        row[f"compiled_graphs_ms[{mode}]"] = _median_ms(lambda: graphed_c(x1, x2))
                        diff = (graphed_c(x1, x2).float() - reference).abs().max().item()
                    row[f"max_abs_diff[{mode}]"] = diff
                    row[f"graph_failure[{mode}]"] = graphed_c.failure
                    if dtype == torch.float32 and mode == "default":
                        row["profile_compiled"] = _profile(compiled, x1, x2)
                except Exception as exc:  # noqa: BLE001 - a probe records failures and goes on
                    row[f"error[{mode}]"] = f"{exc.__class__.__name__}: {str(exc)[:400]}"
                save()
                print(key, mode, {k: v for k, v in row.items() if "profile" not in k}, flush=True)


if __name__ == "__main__":
    main()

"""One-shot GPU probe: environment, and compact-preset speed per scan backend (train step, inference).

Usage (GPU machine): python3 bench/gpu_probe.py
"""

from __future__ import annotations

import importlib
import json
import time

import torch

import fusionmamba_cli as fm
from fusionmamba_cli.ops.selective_scan import available_backends


def _time(fn, warmup=3, repeat=10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    for mod in ("cv2", "PIL", "typer", "rich", "triton", "safetensors", "huggingface_hub", "mamba_ssm"):
        try:
            m = importlib.import_module(mod)
            report[mod] = getattr(m, "__version__", "ok")
        except Exception as exc:  # noqa: BLE001
            report[mod] = f"missing ({exc.__class__.__name__})"
    report["backends"] = available_backends("cuda")
    print(json.dumps(report), flush=True)
    dev = torch.device("cuda")
    for backend in report["backends"]:
        if backend == "reference":
            continue
        torch.manual_seed(0)
        model = fm.create_model("compact").to(dev)
        model.set_scan_backend(backend)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        x1, x2 = torch.rand(8, 1, 128, 128, device=dev), torch.rand(8, 1, 128, 128, device=dev)

        def step():
            out = model(x1, x2)
            loss = (out - 0.5).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        try:
            train_ms = _time(step)
            model.eval()
            y1, y2 = torch.rand(1, 1, 256, 256, device=dev), torch.rand(1, 1, 256, 256, device=dev)
            with torch.inference_mode():
                infer_ms = _time(lambda: model(y1, y2))
            print(json.dumps({"backend": backend, "train_step_b8_128_ms": round(train_ms, 2), "infer_256_ms": round(infer_ms, 2),
                              "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}), flush=True)
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"backend": backend, "error": repr(exc)[:500]}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark the selective-scan backends on a CUDA GPU: forward and forward+backward.

Backends: torch (fusionmamba_cli.ops.scan_torch), triton (fusionmamba_cli.ops.scan_triton) and
mamba_ssm (when `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` imports).
Shapes (batch, K*D, L, N), K = 4 directions:
  * (1, 256, 16384, 16): mamba-ssm's reference point (0.21 ms forward on an H100), which is also
    the compact preset (C0 = 32, K*D = 4*2*32) at level 0 of a 1024x1024 input;
  * compact preset level 0: K*D = 256, L = (H/8)*(W/8) = 1024 (256x256) and 16384 (1024x1024);
  * official preset level 0: C0 = 96, K*D = 768, same L;
  each at batch 1 and 16; combinations whose estimated memory exceeds --max-gb are skipped.
Timing: median of CUDA-event timings after warm-up (compilation included in the warm-up); with
--graphs also of the same call replayed from a CUDA graph (kernel time without the host's launch
overhead, which dominates every backend at the smallest shapes).
Parity: max |y - y_torch| / max |y_torch| in fp32 (and the same for every gradient), computed on
the first batch elements when the torch backend cannot hold the whole batch.

    python3 bench/bench_scan.py --out bench.json            # table + JSON
    python3 bench/bench_scan.py --out bench.json --graphs   # also CUDA-graph (kernel) timings
    python3 bench/bench_scan.py --out bench.json --sweep    # also sweep the Triton arguments
    python3 bench/bench_scan.py --out sweep.json --sweep-only  # only the sweep
    python3 bench/bench_scan.py --out sweep.json --sweep-only --sweep-impl statewise
    python3 bench/bench_scan.py --out bench.json --triton-variant 'tiled={"backward": "tiled"}'
The launch knobs themselves are constants of `fusionmamba_cli/ops/scan_triton/launch.py` (the
sweeps that settled them, and the variants removed since, are in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusionmamba_cli.ops.scan_torch import selective_scan_torch  # noqa: E402

K = 4
N_STATE = 16
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def shape_list() -> list[dict]:
    shapes = []
    for preset, c0 in (("compact", 32), ("official", 96)):
        for px, length in ((256, 1024), (1024, 16384)):
            for batch in (1, 16):
                label = f"{preset} {px}px b{batch}"
                if (batch, 4 * 2 * c0, length) == (1, 256, 16384):
                    label = "mamba ref = " + label
                shapes.append({"label": label, "batch": batch, "channels": 4 * 2 * c0, "length": length,
                               "n_state": N_STATE})
    shapes.sort(key=lambda s: (s["label"][:5] != "mamba", s["channels"], s["length"], s["batch"]))
    return shapes


def load_backends(variants: list[str] = ()) -> dict:
    """torch, triton (its defaults), one `triton[NAME]` per --triton-variant, mamba_ssm if it imports."""
    backends = {"torch": selective_scan_torch}
    try:
        from fusionmamba_cli.ops import scan_triton

        if scan_triton.is_available():
            backends["triton"] = scan_triton.selective_scan_triton
            for spec in variants:
                name, _, overrides = spec.partition("=")
                backends[f"triton[{name}]"] = functools.partial(scan_triton.selective_scan_triton, **json.loads(overrides))
    except Exception as exc:  # noqa: BLE001
        print(f"triton backend unavailable: {exc!r}", file=sys.stderr)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401

        from fusionmamba_cli.ops.scan_mamba_ssm import selective_scan_mamba_ssm

        backends["mamba_ssm"] = selective_scan_mamba_ssm
    except Exception as exc:  # noqa: BLE001
        print(f"mamba_ssm backend unavailable: {exc!r}", file=sys.stderr)
    return backends


def make_inputs(batch, channels, length, n_state, seed=0, device="cuda"):
    gen = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    return {
        "u": rnd(batch, channels, length),
        "delta": rnd(batch, channels, length) * 0.5 - 1.0,
        "A": -torch.exp(rnd(channels, n_state) * 0.5),
        "B": rnd(batch, K, n_state, length),
        "C": rnd(batch, K, n_state, length),
        "D": rnd(channels),
        "delta_bias": rnd(channels) * 0.1,
    }


def call(fn, x):
    return fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], True)


def estimate_gb(backend: str, batch, channels, length, n_state, backward: bool) -> float:
    """Rough peak memory (GB) of one call, to skip what cannot fit."""
    io = 4 * batch * (3 * channels + 2 * K * n_state) * length * (2 if backward else 1)
    if backend == "torch":  # several (L, b, K, D, N) fp32 intermediates, more kept for autograd
        big = 4 * batch * channels * n_state * length
        return (io + big * (14 if backward else 6)) / 1e9
    if backend.startswith("triton") and backward:
        return (io + min(512e6, 8 * batch * channels * n_state * length)) / 1e9
    return io / 1e9


def time_cuda(fn, warmup=2, iters=10, max_s=3.0) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start_wall = time.perf_counter()
    for _ in range(iters):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        torch.cuda.synchronize()
        times.append(t0.elapsed_time(t1))
        if time.perf_counter() - start_wall > max_s and len(times) >= 3:
            break
    return statistics.median(times)


def time_graphed(fn, iters=10) -> float:
    """Median CUDA-event time of replaying `fn` captured in a CUDA graph: GPU time without the
    host's launch overhead (which dominates both backends at the smallest shapes). Gradients
    accumulate into the leaves' .grad tensors allocated during capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_cuda(graph.replay, iters=iters)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run_backend(fn, x, iters, graphs=False):
    """Forward and forward+backward timings (ms), peak memory (GB); with `graphs` also both timed
    as CUDA-graph replays (`*_graph_ms`, or `graph_error` when the backend cannot be captured)."""
    res = {}
    with torch.no_grad():
        torch.cuda.reset_peak_memory_stats()
        res["fwd_ms"] = time_cuda(lambda: call(fn, x), iters=iters)
        res["fwd_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    dy = torch.randn_like(x["u"])

    def fwd_bwd():
        for v in leaves.values():
            v.grad = None
        call(fn, leaves).backward(dy)

    torch.cuda.reset_peak_memory_stats()
    res["fwd_bwd_ms"] = time_cuda(fwd_bwd, iters=iters)
    res["fwd_bwd_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    if graphs:
        try:
            with torch.no_grad():
                res["fwd_graph_ms"] = time_graphed(lambda: call(fn, x), iters=iters)
            res["fwd_bwd_graph_ms"] = time_graphed(fwd_bwd, iters=iters)
        except Exception as exc:  # noqa: BLE001
            res["graph_error"] = repr(exc)[:200]
    return res


def outputs(fn, x, grads=True):
    leaves = {k: v.detach().clone().requires_grad_(grads) for k, v in x.items()}
    y = call(fn, leaves)
    if not grads:
        return y.detach(), {}
    y.backward(torch.ones_like(y) + 0.1 * torch.sin(torch.arange(y.numel(), device=y.device).view_as(y) * 1.0))
    return y.detach(), {k: leaves[k].grad for k in GRAD_NAMES}


def bench_shapes(backends, args) -> list[dict]:
    rows = []
    for shp in shape_list():
        b, ch, length, n = shp["batch"], shp["channels"], shp["length"], shp["n_state"]
        x = make_inputs(b, ch, length, n)
        # parity reference: the torch backend on as many batch elements as fit
        ref_batch = b
        while ref_batch > 1 and estimate_gb("torch", ref_batch, ch, length, n, True) > args.max_gb:
            ref_batch //= 2
        x_ref = {k: (v[:ref_batch] if v.dim() >= 3 else v) for k, v in x.items()}
        ref_fits = estimate_gb("torch", ref_batch, ch, length, n, True) <= args.max_gb
        y_ref, g_ref = outputs(selective_scan_torch, x_ref) if ref_fits else (None, {})
        for name, fn in backends.items():
            row = {**shp, "backend": name}
            if estimate_gb(name, b, ch, length, n, True) > args.max_gb and \
                    estimate_gb(name, b, ch, length, n, False) > args.max_gb:
                row["skipped"] = f"estimated > {args.max_gb} GB"
                rows.append(row)
                print(f"{shp['label']:<32} {name:<10} skipped", flush=True)
                continue
            try:
                if estimate_gb(name, b, ch, length, n, True) <= args.max_gb:
                    row.update(run_backend(fn, x, args.iters, args.graphs))
                else:
                    with torch.no_grad():
                        row["fwd_ms"] = time_cuda(lambda: call(fn, x), iters=args.iters)
                if y_ref is not None and name != "torch":
                    y, g = outputs(fn, x_ref)
                    row["parity_batch"] = ref_batch
                    row["y_rel_err"] = rel_err(y, y_ref)
                    row["grad_rel_err"] = {k: rel_err(g[k], g_ref[k]) for k in GRAD_NAMES}
            except torch.cuda.OutOfMemoryError as exc:
                row["error"] = f"OOM: {str(exc)[:120]}"
            except Exception as exc:  # noqa: BLE001
                row["error"] = repr(exc)[:300]
            torch.cuda.empty_cache()
            rows.append(row)
            print(f"{shp['label']:<32} {name:<10} " + json.dumps({k: row[k] for k in row if k.endswith(
                ("_ms", "rel_err", "error"))}), flush=True)
            write_json(args.out, {"rows": rows})
        del x, x_ref, y_ref, g_ref
        torch.cuda.empty_cache()
    return rows


def sweep(args) -> dict:
    """Time the Triton scan under its arguments at two shapes: the forward without gradients at
    each tile (`chunk`; warps as `launch.FORWARD_WARPS` ships them) and forward+backward with each
    backward (`backward`), the tiled one at several chunks and `block_d`. Every training row also
    records its gradients' largest relative error against the tiled backward at the default chunk,
    which checks the compiled kernels, not only their speed."""
    from fusionmamba_cli.ops import scan_triton as st
    from fusionmamba_cli.ops.scan_triton import launch

    out = {"forward": [], "train": []}
    shapes = [(1, 256, 16384, 16), (16, 768, 1024, 16)]
    fwd_tiles = [64, 128, 256, 512]

    def tiled(chunk=st.DEFAULT_CHUNK, block_d=None):
        return {"backward": "tiled", "chunk": chunk, "block_d": block_d}

    dflt = {"backward": "auto", "chunk": None, "block_d": None}  # the shipped default: statewise
    statewise = {"backward": "statewise", "chunk": None, "block_d": None}
    train_by_shape = [
        # 256 one-channel programs: the serial walk over 16384 steps is the critical path
        [dflt, statewise, tiled(), tiled(64), tiled(256), tiled(512)],
        # 12288 channels (block_d None = 8 on an H100): the GPU is full
        [dflt, statewise, tiled(), tiled(64), tiled(256), tiled(512), tiled(block_d=1)],
    ]
    if args.sweep_impl == "statewise":  # the shipped and the default tiled rows for comparison, then statewise
        train_by_shape = [[rows[0], rows[2], *(r for r in rows if r["backward"] == "statewise")]
                          for rows in train_by_shape]
        fwd_tiles = []
    for si, (b, ch, length, n) in enumerate(shapes):
        x = make_inputs(b, ch, length, n)
        for tile in fwd_tiles:
            rec = {"shape": [b, ch, length, n], "tile": tile, "warps": launch.forward_warps(tile)}
            try:
                with torch.no_grad():
                    rec["fwd_ms"] = time_cuda(lambda: call(functools.partial(st.selective_scan_triton, chunk=tile), x),
                                              iters=20)
            except Exception as exc:  # noqa: BLE001
                rec["error"] = repr(exc)[:200]
            out["forward"].append(rec)
            print("sweep fwd", json.dumps(rec), flush=True)
            write_json(args.out, {"sweep": out})
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        dy = torch.randn_like(x["u"])

        def fwd_bwd(row):
            for v in leaves.values():
                v.grad = None
            y = st.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                         leaves["D"], leaves["delta_bias"], True, **row)
            y.backward(dy)

        ref_grads = None  # the tiled (deterministic) backward at the default chunk
        try:
            fwd_bwd(tiled())
            ref_grads = {k: v.grad.detach().clone() for k, v in leaves.items()}
        except Exception as exc:  # noqa: BLE001
            print(f"sweep train: no reference gradients: {exc!r}"[:300], flush=True)
        for row in train_by_shape[si]:
            rec = {"shape": [b, ch, length, n], **row}
            try:
                if launch.backward_impl(row["backward"]) == "statewise":  # one channel per program
                    rec["statewise_tile_used"] = launch.statewise_tile(length, b * ch / launch.num_sms(x["u"].device))
                    rec["statewise_warps_used"] = launch.statewise_warps(rec["statewise_tile_used"])
                else:
                    rec["block_d_used"] = row["block_d"] or launch.choose_block_d(
                        b, ch, ch // K, n, length, x["u"].device)
                rec["fwd_bwd_ms"] = time_cuda(lambda: fwd_bwd(row), iters=10)
                if args.graphs:
                    rec["fwd_bwd_graph_ms"] = time_graphed(lambda: fwd_bwd(row), iters=10)
                if ref_grads is not None:  # the last timed call's gradients
                    errs = {k: rel_err(leaves[k].grad, ref_grads[k]) for k in GRAD_NAMES}
                    rec["grad_rel_err_max"] = max(errs.values())
                    rec["grad_rel_err_worst"] = max(errs, key=errs.get)
            except Exception as exc:  # noqa: BLE001
                rec["error"] = repr(exc)[:200]
            out["train"].append(rec)
            print("sweep train", json.dumps(rec), flush=True)
            write_json(args.out, {"sweep": out})
        del x, leaves, ref_grads
        torch.cuda.empty_cache()
    return out


_RESULTS: dict = {}


def write_json(path, update):
    _RESULTS.update(update)
    if path:
        Path(path).write_text(json.dumps(_RESULTS, indent=1, default=str))


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def markdown(rows) -> str:
    lines = ["| shape (label) | batch | K*D | L | N | backend | fwd ms | fwd+bwd ms | fwd ms (graph) | "
             "fwd+bwd ms (graph) | y rel err | max grad rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gmax = max(r["grad_rel_err"].values()) if r.get("grad_rel_err") else None
        note = r.get("skipped") or r.get("error")
        fwd = fmt(r.get("fwd_ms")) if not note else note
        lines.append(f"| {r['label']} | {r['batch']} | {r['channels']} | {r['length']} | {r['n_state']} | "
                     f"{r['backend']} | {fwd} | {fmt(r.get('fwd_bwd_ms'))} | {fmt(r.get('fwd_graph_ms'))} | "
                     f"{fmt(r.get('fwd_bwd_graph_ms'))} | {fmt(r.get('y_rel_err'), '.1e')} | "
                     f"{fmt(gmax, '.1e')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_scan.json", help="JSON file for the results")
    parser.add_argument("--iters", type=int, default=20, help="timed repetitions (median reported)")
    parser.add_argument("--max-gb", type=float, default=20.0, help="skip combos estimated above this")
    parser.add_argument("--sweep", action="store_true", help="also sweep the Triton scan's arguments")
    parser.add_argument("--sweep-only", action="store_true", help="only the knob sweep")
    parser.add_argument("--triton-variant", action="append", default=[], metavar="NAME=JSON",
                        help='another Triton column with these selective_scan_triton keyword arguments, '
                             'e.g. tiled={"backward": "tiled"}')
    parser.add_argument("--graphs", action="store_true",
                        help="also time each call replayed from a CUDA graph (GPU time without launch overhead)")
    parser.add_argument("--sweep-impl", choices=("all", "statewise"), default="all",
                        help="statewise: sweep only the statewise backward (and the shipped row)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_scan.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    import triton

    meta = {"device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "k_directions": K}
    write_json(args.out, {"meta": meta})
    print(json.dumps(meta))
    if args.sweep or args.sweep_only:
        sweep(args)
        if args.sweep_only:
            return
    backends = load_backends(args.triton_variant)
    rows = bench_shapes(backends, args)
    table = markdown(rows)
    print()
    print(table)
    write_json(args.out, {"rows": rows, "markdown": table})


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    main()

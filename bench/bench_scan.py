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
    python3 bench/bench_scan.py --out bench.json --sweep    # also explore the Triton launch knobs
    python3 bench/bench_scan.py --out sweep.json --sweep-only  # only the knob sweep
    python3 bench/bench_scan.py --out sweep.json --sweep-only --sweep-impl statewise
    python3 bench/bench_scan.py --out bench.json --triton-variant 'tiled={"bwd_impl": "tiled"}'
"""

from __future__ import annotations

import argparse
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


def with_tuning(fn, overrides: dict):
    """`fn` run with `scan_triton._TUNING` updated by `overrides` (the forward fixes the backward's
    kernel and knobs, so restoring them after the call is enough)."""
    from fusionmamba_cli.ops import scan_triton

    def run(*args, **kwargs):
        saved = dict(scan_triton._TUNING)
        scan_triton._TUNING.update(overrides)
        try:
            return fn(*args, **kwargs)
        finally:
            scan_triton._TUNING.clear()
            scan_triton._TUNING.update(saved)

    return run


def load_backends(variants: list[str] = ()) -> dict:
    """torch, triton (its defaults), one `triton[NAME]` per --triton-variant, mamba_ssm if it imports."""
    backends = {"torch": selective_scan_torch}
    try:
        from fusionmamba_cli.ops import scan_triton

        if scan_triton.is_available():
            backends["triton"] = scan_triton.selective_scan_triton
            for spec in variants:
                name, _, overrides = spec.partition("=")
                backends[f"triton[{name}]"] = with_tuning(scan_triton.selective_scan_triton, json.loads(overrides))
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
    """Time the Triton kernels under different launch knobs at two shapes: the forward without
    gradients (tile, warps, prefetch, vectorised loads) and forward+backward (chunk, backward warps,
    block_d, exact h_{t-1}, register cap, backward prefetch). Every training row also records its
    gradients' largest relative error against the original kernel (default chunk and warps,
    bwd_prefetch False), which checks the compiled variants, not only their speed. The training rows
    cover both backward kernels (`bwd_impl` "tiled" and "statewise"; for "statewise" its tile, warps,
    and B/C prefetch; the "statewise" rows' chunk is the forward's tile)."""
    from fusionmamba_cli.ops import scan_triton as st

    base = dict(st._TUNING)
    out = {"forward": [], "train": []}
    shapes = [(1, 256, 16384, 16), (16, 768, 1024, 16)]
    # forward (no grad): (tile, warps, prefetch, vectorised B/C loads)
    fwd_cfgs = [(64, 1, True, True), (64, 2, True, True), (128, 2, True, True), (256, 4, True, True),
                (512, 8, True, True)]
    # training rows, per shape: {"chunk", "block_d", and `_TUNING` overrides}; the first row is the
    # shipped default (bwd_impl "auto": statewise, its forward tile from the programs-per-SM rules)
    dflt_chunk = st.DEFAULT_CHUNK

    def cfg(chunk=dflt_chunk, warps=None, block_d=None, **tuning):
        # the tiled backward (the deterministic one)
        return {"chunk": chunk, "block_d": block_d, "bwd_impl": "tiled",
                "bwd_warps": warps or st._bwd_warps(chunk), **tuning}

    def sw(tile=base["statewise_tile"], warps=base["statewise_warps"], chunk=None, **tuning):
        # (tile: an int or the default's rules by programs per SM)
        # the statewise backward (1-D scans over `tile` steps, one state at a time); the forward
        # walks tiles of `chunk` (None: the programs-per-SM rules) and saves the state every `tile`
        return {"chunk": chunk, "block_d": None, "bwd_impl": "statewise", "statewise_tile": tile,
                "statewise_warps": warps, **tuning}

    dflt = {"chunk": None, "block_d": None}
    # bwd_prefetch levels: False/"none" (the original kernel), "early", "fwd", True/"all" (see
    # scan_triton._BWD_PREFETCH_LEVELS). Static sm_90 spill stacks (bytes/thread, ptxas): chunk 128 at
    # 4 warps none 40, early 48, fwd 96, all 224; at 8 warps 0 for every level; chunk 512 600-1100.
    prefetch_rows = [cfg(bwd_prefetch=False), cfg(bwd_prefetch="early"), cfg(bwd_prefetch="fwd")]
    # statewise rows of both shapes: without the B/C prefetch, tiles of 1024 and 512
    sw_rows = [sw(statewise_prefetch=False), sw(1024, 4), sw(512, 4)]
    train_by_shape = [
        # 256 one-channel programs (block_d None = 1 here): the serial walk over 16384 steps is the
        # critical path, so fewer, longer tiles may pay
        [dflt, cfg(), *prefetch_rows, cfg(warps=8), cfg(warps=8, bwd_prefetch=False), cfg(64, 2), cfg(64, 4),
         cfg(256, 8), cfg(256, 8, bwd_prefetch="fwd"), cfg(512, 8), cfg(512, 16),
         # statewise: 256 programs, each walking 16384 / tile tiles
         *sw_rows, sw(2048, 4, statewise_prefetch=False), sw(2048, 8)],
        # 12288 channels (block_d None = 8 on an H100): the GPU is full
        [dflt, cfg(), *prefetch_rows, cfg(warps=8), cfg(64, 2), cfg(64, 4), cfg(256, 8), cfg(512, 8),
         cfg(block_d=1),
         # statewise: 12288 programs; tiles above L = 1024 are capped at 1024, so no 2048 rows
         *sw_rows, sw(256, 4)],
    ]
    if args.sweep_impl == "statewise":  # the shipped and the tiled rows for comparison, then statewise
        train_by_shape = [[rows[0], rows[1], *(r for r in rows[2:] if r.get("bwd_impl") == "statewise")]
                          for rows in train_by_shape]
        fwd_cfgs = []
    for si, (b, ch, length, n) in enumerate(shapes):
        x = make_inputs(b, ch, length, n)
        for tile, warps, prefetch, vec in fwd_cfgs:
            st._TUNING.update(base, infer_tile=tile, fwd_warps={**base["fwd_warps"], tile: warps},
                              prefetch=prefetch, fwd_vec=vec)
            rec = {"shape": [b, ch, length, n], "tile": tile, "warps": warps, "prefetch": prefetch, "vec": vec}
            try:
                with torch.no_grad():
                    rec["fwd_ms"] = time_cuda(lambda: call(st.selective_scan_triton, x), iters=20)
            except Exception as exc:  # noqa: BLE001
                rec["error"] = repr(exc)[:200]
            out["forward"].append(rec)
            print("sweep fwd", json.dumps(rec), flush=True)
            write_json(args.out, {"sweep": out})
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        dy = torch.randn_like(x["u"])

        def fwd_bwd(chunk, block_d):
            for v in leaves.values():
                v.grad = None
            y = st.selective_scan_triton(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                         leaves["D"], leaves["delta_bias"], True, chunk=chunk, block_d=block_d)
            y.backward(dy)

        # reference gradients: the original tiled backward (no prefetch) at the default chunk and warps
        ref_grads = None
        try:
            st._TUNING.update(base, bwd_prefetch=False, bwd_impl="tiled", exact_prev=True)
            fwd_bwd(dflt_chunk, None)
            ref_grads = {k: v.grad.detach().clone() for k, v in leaves.items()}
        except Exception as exc:  # noqa: BLE001
            print(f"sweep train: no reference gradients: {exc!r}"[:300], flush=True)
        for row in train_by_shape[si]:
            chunk, block_d = row["chunk"], row["block_d"]
            tuning = {k: v for k, v in row.items() if k not in ("chunk", "block_d")}
            st._TUNING.update(base, **tuning)
            rec = {"shape": [b, ch, length, n], **row}
            try:
                if st._bwd_impl() == "statewise":  # one channel per program; the tile capped by L
                    rec["statewise_tile_used"] = st._statewise_tile(length, b * ch / st._num_sms(x["u"].device))
                    rec["statewise_warps_used"] = st._statewise_warps(rec["statewise_tile_used"])
                else:
                    rec["block_d_used"] = block_d or st._choose_block_d(
                        b, ch, ch // K, n, length, x["u"].device)
                rec["fwd_bwd_ms"] = time_cuda(lambda: fwd_bwd(chunk, block_d), iters=10)
                if args.graphs:
                    rec["fwd_bwd_graph_ms"] = time_graphed(lambda: fwd_bwd(chunk, block_d), iters=10)
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
    st._TUNING.update(base)
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
    parser.add_argument("--sweep", action="store_true", help="also sweep the Triton launch knobs")
    parser.add_argument("--sweep-only", action="store_true", help="only the knob sweep")
    parser.add_argument("--triton-variant", action="append", default=[], metavar="NAME=JSON",
                        help='another Triton column with these _TUNING overrides, e.g. tiled={"bwd_impl": "tiled"}')
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

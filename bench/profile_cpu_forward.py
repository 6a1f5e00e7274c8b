"""torch.profiler summary of CPU forwards (not a test): where a fusion's time goes, op by op.

Usage: python bench/profile_cpu_forward.py [--weights compact-ir_vis | --preset compact] [--size 256] [--threads 2]
       [--forwards 3] [--scan-backend numba|torch] [--rows 15] [--shapes]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import fusionmamba_cli as fm
import fusionmamba_cli.model.ssm as ssm

def _labelled(fn):
    """The dispatcher's call as one profiler range: a numba kernel is no aten op and would not show."""

    def scan(*args, **kwargs):
        with torch.profiler.record_function("selective_scan (own time)"):
            return fn(*args, **kwargs)

    return scan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default="compact-ir_vis")
    parser.add_argument("--preset", default=None, help="a random-init preset instead of --weights (e.g. compact, benchmark's default)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forwards", type=int, default=3)
    parser.add_argument("--scan-backend", default=None)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--shapes", action="store_true", help="group by input shapes too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.preset:
        torch.manual_seed(0)
        model = fm.create_model(args.preset).eval()
        args.weights = f"preset {args.preset}"
    else:
        model = fm.load_model(args.weights, device="cpu", dtype=torch.float32)
    model.set_scan_backend(args.scan_backend)
    ssm.selective_scan = _labelled(ssm.selective_scan)
    ssm.selective_scan_time_major = _labelled(ssm.selective_scan_time_major)
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.rand(1, 1, args.size, args.size, generator=g) for _ in range(2))
    with torch.inference_mode():
        for _ in range(2):  # warm-up (and the scan's JIT, if any)
            model(x1, x2)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            for _ in range(args.forwards):
                model(x1, x2)
    events = prof.key_averages(group_by_input_shape=args.shapes)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"{args.weights}, {args.size}x{args.size}, {args.threads} threads, {args.forwards} forwards: "
          f"{total / 1e3:.0f} ms of self CPU time")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]:
        shapes = f"  {e.input_shapes}"[:120] if args.shapes else ""
        print(f"  {e.key:42s} {100 * e.self_cpu_time_total / total:5.1f} %  {e.self_cpu_time_total / 1e3:8.1f} ms  {e.count:6d} calls{shapes}")


if __name__ == "__main__":
    main()

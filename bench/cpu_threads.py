"""Time one 256x256 pair through `compact-ct_mri` at 1 and 2 torch threads on the CPU, in
alternating rounds (the load of other processes changes while it runs; it is printed per round).

    python bench/cpu_threads.py [--rounds 3] [--repeat 7] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from fusionmamba_cli import load_model
from fusionmamba_cli.fusion.pipeline import Fuser
from fusionmamba_cli.imaging.io import LoadedImage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    first, second = (LoadedImage(rng.random((256, 256), dtype=np.float32)) for _ in range(2))
    fuser = Fuser(load_model("compact-ct_mri", device="cpu"), task="ct_mri", device=torch.device("cpu"))
    print(f"usable CPUs {len(os.sched_getaffinity(0))}, load average {os.getloadavg()}, torch default threads {torch.get_num_threads()}")
    for round_ in range(args.rounds):
        for count in (int(n) for n in args.threads.split(",")):
            torch.set_num_threads(count)
            fuser.fuse(first, second)  # warm-up
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                fuser.fuse(first, second)
                times.append(time.perf_counter() - start)
            print(f"round {round_} threads {count}: median {statistics.median(times):.3f} s "
                  f"(min {min(times):.3f}, max {max(times):.3f}), load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()

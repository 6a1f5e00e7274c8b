#!/usr/bin/env python3
"""Compile the Triton scan kernels offline for sm_90 (no GPU needed) as they were in one module at a
git revision, at their shipped settings, and as the package compiles them now; compare the SASS.

Evidence that the split of `ops/scan_triton.py` into a package changed no compiled code:

    python3 tools/scan_sass_compare.py e428da7      # prints one line per kernel configuration

Uses Triton's bundled ptxas and nvdisasm; every pointer is taken as 16-byte aligned and every
length-like integer as a multiple of 16, as at the model's shapes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, not interpret
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fusionmamba_cli.ops.scan_triton import backward_statewise, backward_tiled, forward  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
NVDISASM = Path(triton.__file__).parent / "backends/nvidia/bin/nvdisasm"
DIV16 = [["tt.divisibility", 16]]
# the old module's knobs at their shipped values (constexpr arguments the package no longer has)
OLD_FIXED = {
    "_scan_fwd_kernel": {"PREFETCH": True, "ROW_ADJ": 0},
    "_scan_bwd_kernel": {"PREFETCH": 3, "ROW_ADJ": 0, "ATOMIC": False, "EXACT_PREV": True},
    "_scan_bwd_statewise_kernel": {"PREFETCH": True},
}
DIV16_INTS = {"L", "L_row", "channels", "per_group", "N", "n_blocks"}
CASES = [  # (kernel, constexprs, warps)
    ("_scan_fwd_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, SAVE_STATES=False, N_P2=16, TL=64, SAVE_EVERY=1), 1),
    ("_scan_fwd_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, SAVE_STATES=False, N_P2=16, TL=256, SAVE_EVERY=1), 4),
    ("_scan_fwd_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, SAVE_STATES=True, N_P2=16, TL=128, SAVE_EVERY=8), 2),
    ("_scan_fwd_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, SAVE_STATES=True, N_P2=16, TL=128, SAVE_EVERY=1), 2),
    ("_scan_bwd_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, N_P2=16, TL=128, BD_P2=8), 4),
    ("_scan_bwd_kernel", dict(HAS_D=False, HAS_BIAS=False, SOFTPLUS=True, N_P2=16, TL=64, BD_P2=1), 4),
    ("_scan_bwd_statewise_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, N_P2=16, TL=1024), 4),
    ("_scan_bwd_statewise_kernel", dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, N_P2=16, TL=512), 4),
]
NEW = {"_scan_fwd_kernel": forward, "_scan_bwd_kernel": backward_tiled, "_scan_bwd_statewise_kernel": backward_statewise}


def _old_module(revision: str):
    """The single-module scan_triton.py of `revision`, imported under another name."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:fusionmamba_cli/ops/scan_triton.py"],
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_scan_triton.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_scan_triton", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sass(fn, constexprs: dict, warps: int) -> str:
    """The kernel's sm_90 SASS without comments, pointers as *fp32 and the other runtime args as i32."""
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name.endswith("_ptr"):
            signature[name], attrs[(index,)] = "*fp32", DIV16
        elif name in constexprs:
            signature[name] = "constexpr"
        else:
            signature[name] = "i32"
            if name in DIV16_INTS:
                attrs[(index,)] = DIV16
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs, attrs=attrs), target=TARGET,
                              options={"num_warps": warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        text = subprocess.run([str(NVDISASM), "-c", cubin.name], capture_output=True, text=True, check=True).stdout
    return re.sub(r"//.*", "", text)


def main() -> int:
    old = _old_module(sys.argv[1] if len(sys.argv) > 1 else "e428da7")
    same = True
    for kernel, constexprs, warps in CASES:
        before = sass(getattr(old, kernel), {**constexprs, **OLD_FIXED[kernel]}, warps)
        after = sass(getattr(NEW[kernel], kernel), constexprs, warps)
        digest = lambda s: hashlib.sha256(s.encode()).hexdigest()[:12]  # noqa: E731
        same &= before == after
        print(f"{kernel:28s} {constexprs} warps={warps}: {'identical' if before == after else 'DIFFERENT'} "
              f"({digest(before)} / {digest(after)}, {before.count(chr(10))} lines)")
    print("all identical" if same else "differences found")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

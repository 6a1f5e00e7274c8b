"""When the model may use the fused CPU kernels of `ops/cpu_kernels.py` instead of stock torch ops.

Only for inference on fp32 CPU tensors: no gradient wanted (the kernels are forward-only), not under
`torch.compile` or a dispatch mode (FlopCounterMode counts the torch ops), numba importable, and not switched off by ``FUSIONMAMBA_CPU_KERNELS=0`` (read on
every call, so a benchmark can A/B them in one process). GPU and training paths never get here.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch

ENV_VAR = "FUSIONMAMBA_CPU_KERNELS"
_OFF = ("0", "off", "false", "no")

_kernels: ModuleType | None | bool = False  # False: not tried yet; None: numba missing or broken


def _load() -> ModuleType | None:
    """The kernels' module, imported once (numba and its JIT load lazily, as for the scan)."""
    global _kernels
    if _kernels is False:
        try:
            _kernels = importlib.import_module("fusionmamba_cli.ops.cpu_kernels")
        except ImportError:
            _kernels = None
    return _kernels


def cpu_kernels_for(*tensors: torch.Tensor) -> ModuleType | None:
    """The fused kernels' module when every tensor is an fp32 CPU tensor needing no gradient, else None."""
    if os.environ.get(ENV_VAR, "").strip().lower() in _OFF:
        return None
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32:
            return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    if torch.compiler.is_compiling() or _dispatch_mode_active():
        return None
    return _load()


def _dispatch_mode_active() -> bool:
    """A TorchDispatchMode (FlopCounterMode, fake tensors) wants to see every op: no kernel hides any."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - older or newer torch without it
        return False
    return _get_current_dispatch_mode() is not None


def tensors_identity(*tensors: torch.Tensor | None) -> tuple | None:
    """(storage, version, dtype) of each tensor (None for an absent one), for caches of values derived
    from weights; None where a version is not tracked (tensors made under inference mode)."""
    try:
        return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype) for t in tensors)
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None

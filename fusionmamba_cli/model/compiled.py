"""Inference through `torch.compile`, with a clean fallback to the plain model.

CUDA graphs (model/graphed.py) remove the launch overhead but still run each of the forward's
~1,200 small kernels; TorchInductor fuses the layer norms, activations and reshapes around the
matrix products into about half as many (BENCHMARKS.md: compact 256² 3.36 -> 1.99 ms on an H100 with
both). Compiling costs one to three minutes per input shape, so it is opt-in (`--compile`): worth it
for a folder of same-size pairs, not for one image, and for training (fixed crop size).

It applies to CUDA inputs only: on the project's 2-core CPU the compiled compact forward at 256²
took 1,099 ms against 164 ms uncompiled (and 455 s to compile), so CPU inputs run the plain model,
with one warning when compiling was asked for.

`CompiledForward(model)(x1, x2)` behaves like `model(x1, x2)`. If compiling or running the compiled
code fails (no C++ compiler, an unsupported Python, an Inductor bug), it warns once and runs the model
eagerly from then on; out-of-memory errors are not swallowed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from fusionmamba_cli.errors import is_out_of_memory

ENV_VAR = "FUSIONMAMBA_COMPILE"
DEVICE_TYPES = ("cuda",)  # where compiling pays (see the module docstring)

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def compile_disabled_by_env() -> bool:
    """True when FUSIONMAMBA_COMPILE is 0/false/no/off (a global opt-out, e.g. on a broken toolchain)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off")


class CompiledForward:
    """A two-input forward run through `torch.compile` (static shapes: one compilation per shape)."""

    def __init__(self, model: nn.Module, *, enabled: bool = True, backend: str = "inductor", mode: str | None = None) -> None:
        self.model = model
        self.failure: str | None = None  # why compilation was switched off, if it failed
        self.used = False  # a call has run compiled code
        self._compiled: Forward | None = None
        self._warned_device = False
        if enabled and not compile_disabled_by_env():
            try:
                self._compiled = torch.compile(model, backend=backend, mode=mode, dynamic=False)
            except Exception as exc:  # noqa: BLE001 - e.g. "Dynamo is not supported on Python 3.x"
                self.disable(exc)

    @property
    def enabled(self) -> bool:
        return self._compiled is not None

    def disable(self, exc: BaseException) -> None:
        """Run the plain model from now on (one warning); also for failures outside the call, e.g. in a
        backward pass compiled at its first use."""
        self._compiled = None
        self.failure = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        warnings.warn(f"torch.compile failed ({self.failure}); running the model without it", RuntimeWarning, stacklevel=3)

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            return self.model(x1, x2)
        if x1.device.type not in DEVICE_TYPES:
            if not self._warned_device:
                self._warned_device = True
                warnings.warn(f"torch.compile is only used on {'/'.join(DEVICE_TYPES)} devices (slower on {x1.device.type}); "
                              "running the model without it", RuntimeWarning, stacklevel=2)
            return self.model(x1, x2)
        try:
            output = self._compiled(x1, x2)
            self.used = True
            return output
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "run it eagerly"
            if is_out_of_memory(exc):
                raise
            self.disable(exc)
            return self.model(x1, x2)

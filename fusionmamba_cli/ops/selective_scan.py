"""One front door for the selective scan, with pluggable backends.

Backends: ``reference`` (sequential oracle), ``torch`` (blocked pure PyTorch, any device),
``numba`` (fused CPU kernel, JIT-compiled), ``triton`` (our GPU kernel, no CUDA compilation),
``mamba_ssm`` (the compiled kernel, when installed).
Choice: explicit argument (``backend=``; the model passes its modules' ``scan_backend``) >
``FUSIONMAMBA_SCAN_BACKEND`` (read once, the process's default) > ``auto`` (mamba_ssm > triton on
CUDA, numba > torch on the CPU). A forced backend that cannot run here falls back with one warning,
never a crash. On the meta device the scan only propagates shapes; `observe_scans` lets a caller see
every call's shape (the FLOP count uses both).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

ENV_VAR = "FUSIONMAMBA_SCAN_BACKEND"

ScanFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class _Backend:
    """Where a backend's scan function lives, and whether it needs a CUDA (or a CPU) tensor."""

    module: str
    function: str
    needs_cuda: bool
    needs_cpu: bool = False


_BACKENDS: dict[str, _Backend] = {
    "reference": _Backend("fusionmamba_cli.ops.scan_reference", "selective_scan_ref", False),
    "torch": _Backend("fusionmamba_cli.ops.scan_torch", "selective_scan_torch", False),
    "numba": _Backend("fusionmamba_cli.ops.scan_numba", "selective_scan_numba", False, needs_cpu=True),
    "triton": _Backend("fusionmamba_cli.ops.scan_triton", "selective_scan_triton", True),
    "mamba_ssm": _Backend("fusionmamba_cli.ops.scan_mamba_ssm", "selective_scan_mamba_ssm", True),
}
# every name a caller may ask for: the library's one list (the CLI's --scan-backend choices derive from it)
BACKEND_NAMES = ("auto", *_BACKENDS)
_loaded: dict[str, ScanFn | None] = {}
_load_errors: dict[str, str] = {}
_warned: set[str] = set()
_env_default: list[str] = []  # FUSIONMAMBA_SCAN_BACKEND as read at the first need (at most one item)


@dataclass(frozen=True)
class ScanCall:
    """The shape of one selective-scan call, as `observe_scans` observers see it."""

    batch: int
    channels: int  # K*D
    d_state: int  # N
    length: int  # L
    has_d: bool
    device: torch.device


ScanObserver = Callable[[ScanCall], None]
_observers: tuple[ScanObserver, ...] = ()  # a tuple swapped whole: calls read it without a lock
_observers_lock = threading.Lock()


@contextmanager
def observe_scans(observer: ScanObserver) -> Iterator[None]:
    """Call `observer` with the shape of every selective scan run inside the block (any thread)."""
    global _observers
    with _observers_lock:
        _observers = (*_observers, observer)
    try:
        yield
    finally:
        with _observers_lock:
            remaining = list(_observers)
            remaining.remove(observer)
            _observers = tuple(remaining)


def _load(name: str) -> ScanFn | None:
    """Import a backend once; None (remembered) when its dependencies are missing or broken."""
    if name not in _loaded:
        spec = _BACKENDS[name]
        try:
            module = importlib.import_module(spec.module)
            fn = getattr(module, spec.function)
            is_usable = getattr(module, "is_available", lambda: True)
            _loaded[name] = fn if is_usable() else None
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            logger.debug("scan backend %s unavailable: %s", name, exc)
            _load_errors[name] = f"{exc.__class__.__name__}: {exc}"
            _loaded[name] = None
    return _loaded[name]


def _usable(name: str, device: torch.device) -> bool:
    spec = _BACKENDS[name]
    if (spec.needs_cuda and device.type != "cuda") or (spec.needs_cpu and device.type != "cpu"):
        return False
    return _load(name) is not None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on `device` in this environment."""
    dev = torch.device(device)
    return [name for name in _BACKENDS if _usable(name, dev)]


def _warn_once(key: str, message: str) -> None:
    """One RuntimeWarning per key and process (a batch of a thousand pairs warns once)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _auto(device: torch.device) -> str:
    if device.type == "cuda":
        for name in ("mamba_ssm", "triton"):
            if _usable(name, device):
                return name
    if device.type == "cpu":
        if _usable("numba", device):
            return "numba"
        reason = _load_errors.get("numba", "it failed on an earlier call")
        _warn_once("unavailable:numba", f"the fused CPU scan (numba) is unavailable ({reason[:200]}); using the slower 'torch' backend")
    return "torch"


def check_backend_name(name: str) -> str:
    """`name` normalised (stripped, lower case); ValueError unless it is one of BACKEND_NAMES."""
    normalised = name.strip().lower()
    if normalised not in BACKEND_NAMES:
        raise ValueError(f"unknown scan backend {normalised!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return normalised


def default_backend() -> str:
    """The process's default: FUSIONMAMBA_SCAN_BACKEND, read once at the first need, else "auto"."""
    if not _env_default:
        _env_default.append(os.environ.get(ENV_VAR) or "auto")
    return _env_default[0]


def resolve_backend(backend: str | None = None, device: torch.device | str = "cpu") -> str:
    """Pick the backend name: argument > the default (environment variable) > auto; fall back with one warning."""
    requested = check_backend_name(backend or default_backend())
    dev = torch.device(device)
    if requested == "auto":
        return _auto(dev)
    if _usable(requested, dev):
        return requested
    fallback = _auto(dev)
    key = f"{requested}->{fallback}@{dev.type}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"scan backend {requested!r} cannot run on {dev.type} here; using {fallback!r} instead",
            RuntimeWarning,
            stacklevel=2,
        )
    return fallback


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """Selective scan y = SSM(u) with per-step delta; shapes as in `scan_reference`.

    u, delta (batch, K*D, L); A (K*D, N); B, C (batch, K, N, L); D, delta_bias (K*D,).
    """
    _notify(u.shape[0], u.shape[1], A.shape[1], u.shape[-1], D is not None, u.device)
    if u.device.type == "meta":  # shapes only: no backend computes on meta tensors
        return torch.empty_like(u)
    return _run(resolve_backend(backend, u.device), u, delta, A, B, C, D, delta_bias, delta_softplus)


def prefers_time_major(backend: str | None, device: torch.device | str) -> bool:
    """Whether the backend chosen for `device` takes time-major layouts without copies (numba's kernel);
    callers that can produce either layout then call `selective_scan_time_major`."""
    dev = torch.device(device)
    return dev.type == "cpu" and resolve_backend(backend, dev) == "numba"


def selective_scan_time_major(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    delta_proj: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """`selective_scan` on time-major layouts: u and y (batch, K, L, D); B, C (batch, K, L, N);
    delta (batch, K, L, D), or with `delta_proj` (K, D, R) low-rank factors (batch, K, L, R) whose
    step is delta[b, k, t] @ delta_proj[k].T (mamba's dt_proj).

    The numba kernel reads these in place and applies delta_proj itself; any other backend gets the
    full delta and the channel-major layouts (one copy each way).
    """
    batch, groups, length, per_group = u.shape
    _notify(batch, groups * per_group, A.shape[1], length, D is not None, u.device)
    name = resolve_backend(backend, u.device)
    if name == "numba":  # resolve_backend returned it: loadable
        try:
            return importlib.import_module(_BACKENDS["numba"].module).selective_scan_numba_time_major(
                u, delta, A, B, C, D, delta_bias, delta_softplus, delta_proj
            )
        except Exception as exc:  # noqa: BLE001 - as in `_run`: the JIT failed here; torch from now on
            _disable(name, exc)
            name = "torch"
    if delta_proj is not None:
        delta = torch.matmul(delta, delta_proj.transpose(1, 2))

    def channel_major(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(2, 3).reshape(batch, groups * per_group, length)

    y = _run(name, channel_major(u), channel_major(delta), A, B.transpose(2, 3), C.transpose(2, 3), D, delta_bias, delta_softplus)
    return y.view(batch, groups, per_group, length).transpose(2, 3)


def _notify(batch: int, channels: int, d_state: int, length: int, has_d: bool, device: torch.device) -> None:
    """Tell the `observe_scans` observers about one call."""
    if _observers:
        call = ScanCall(batch, channels, d_state, length, has_d, device)
        for observer in _observers:
            observer(call)


def _disable(name: str, exc: Exception) -> None:
    """A backend failed at run time: never try it again in this process, and say so once."""
    _loaded[name] = None
    _load_errors[name] = f"{exc.__class__.__name__}: {exc}"
    _warned.add(f"unavailable:{name}")  # this warning is the one; `auto` stays quiet about it later
    warnings.warn(f"scan backend {name!r} failed ({exc.__class__.__name__}: {str(exc)[:200]}); using 'torch' instead", RuntimeWarning, stacklevel=3)


def _run(name: str, u, delta, A, B, C, D, delta_bias, delta_softplus) -> torch.Tensor:
    """Call backend `name` (channel-major layouts); a compiled backend that fails falls back to torch."""
    fn = _load(name)
    assert fn is not None  # resolve_backend only returns loadable backends
    if name in ("reference", "torch"):
        return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)
    try:
        return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a kernel that fails to compile or launch here (GPU, numba's JIT)
        _disable(name, exc)
        return _load("torch")(u, delta, A, B, C, D, delta_bias, delta_softplus)

"""Convert the authors' checkpoints (`.pth` state dicts saved by their training code) to our safetensors.

The `.pth` is opened with `torch.load(weights_only=True)` only (a file that needs pickle code execution is
refused). Keys and shapes are checked against a named preset, or the whole config is inferred from the
shapes, so any checkpoint of the authors' architecture converts. Constant buffers are dropped and the
config is stored in the safetensors metadata.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from fusionmamba_cli.checkpoints.files import build_model, read_checkpoint, read_tensors, save_weights
from fusionmamba_cli.errors import WeightsFormatError, WeightsNotFoundError
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig, get_preset
from fusionmamba_cli.version import __version__

# FLOP/parameter counters that profilers (thop) attach as buffers to every module of a trained model.
_PROFILER_KEY = re.compile(r"(^|\.)(total_ops|total_params)$")
_SHOWN = 3  # how many offending keys an error message lists


class _HostLinspace(TorchFunctionMode):
    """Keep `torch.linspace` on the CPU while the network is built on the meta device (its result is read)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs.setdefault("device", "cpu")
        return func(*args, **kwargs)


def expected_shapes(config: FusionMambaConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the network's state dict for `config`, without allocating it (meta device)."""
    with torch.device("meta"), _HostLinspace():
        model = FusionMamba(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _listing(items: list[str]) -> str:
    more = f", ... (+{len(items) - _SHOWN})" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def check_state_dict(state: dict[str, torch.Tensor], config: FusionMambaConfig, *, source: str = "checkpoint") -> None:
    """Raise `WeightsFormatError` naming the first missing / unexpected keys and shape mismatches.

    `base_mask` buffers may be absent (they are the constant all-ones default, which ours drop).
    """
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in state and not key.endswith("base_mask")]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs {expected[key]}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != expected[key]
    ]
    problems = [
        f"{len(found)} {what} ({_listing(found)})"
        for what, found in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if found
    ]
    if problems:
        raise WeightsFormatError(f"{source}: " + "; ".join(problems))


def _describe(config: FusionMambaConfig) -> str:
    return f"dims={list(config.dims)}, depths={list(config.depths)}, depths_decoder={list(config.depths_decoder)}, d_state={config.d_state}"


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    preset: str | None = None,
) -> FusionMambaConfig:
    """Write the checkpoint `src` (authors' `.pth`, or any weights file we read) as our safetensors `dst`.

    With `preset` the keys and shapes must be exactly the preset's (e.g. `official`, `official-tiny`);
    without, the config (dims, depths, decoder depths, d_state, ablation switches) is inferred from the
    shapes. The weights keep their floating dtype. Returns the config stored in `dst`'s metadata.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise WeightsNotFoundError(f"{src}: no such file")
    if dst.suffix.lower() != ".safetensors":
        raise WeightsFormatError(f"{dst}: the output must be a .safetensors file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise WeightsFormatError(f"{dst}: refusing to overwrite the input")
    try:
        state, config, _ = read_checkpoint(src)
    except WeightsFormatError:
        if preset is None:
            raise
        state, config = read_tensors(src), None  # not a recognisable state dict: the preset check says why
    state = {key: value for key, value in state.items() if not _PROFILER_KEY.search(key)}
    if preset is not None:
        try:
            wanted = get_preset(preset)
        except ValueError as exc:
            raise WeightsFormatError(str(exc)) from None
        hint = f"; without --preset the config is inferred ({_describe(config)})" if config is not None else ""
        try:
            check_state_dict(state, wanted, source=f"{src} does not match preset {preset!r}")
        except WeightsFormatError as exc:
            raise WeightsFormatError(f"{exc}{hint}") from None
        config = wanted
    model = build_model(state, config, str(src))
    dtypes = {value.dtype for value in state.values() if value.is_floating_point()}
    metadata = {"source": src.name, "converted_by": f"fusionmamba {__version__}"}
    if preset is not None:
        metadata["preset"] = preset
    save_weights(model, dst, metadata=metadata, dtype=dtypes.pop() if len(dtypes) == 1 else None)
    return config


__all__ = ["check_state_dict", "convert_checkpoint", "expected_shapes"]

"""Read and write weights files safely.

Our format: safetensors with the config JSON in the metadata key ``config``. The authors' files
(a ``.pth`` of their ``state_dict``, or a safetensors without config, like the parity fixture) load
too: the config is inferred from the tensor shapes. ``.pth`` files are only ever opened with
``torch.load(weights_only=True)``, so a file that needs pickle code execution is refused.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from fusionmamba_cli.atomic import write_bytes_atomic
from fusionmamba_cli.checkpoints.resolve import resolve_weights
from fusionmamba_cli.errors import WeightsFormatError
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig

CONFIG_KEY = "config"
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training checkpoint and strip DataParallel / compile prefixes."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise WeightsFormatError(f"{path}: no state dict found in the file")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = re.sub(r"^(module\.|_orig_mod\.)+", "", key)
        state[key] = value
    if not state:
        raise WeightsFormatError(f"{path}: the file holds no tensors")
    return state


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsFormatError(
            f"{path}: refused - the file needs arbitrary code execution to load (not a plain state dict): "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__})") from None
    return _unwrap(obj, path)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file as stored, without a config (e.g. to list what a file holds)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return load_file(str(path))
    return _read_pth(path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], FusionMambaConfig, dict[str, str]]:
    """Read a weights file: (state dict, config, metadata). Config from metadata, else inferred."""
    path = Path(path)
    metadata: dict[str, str] = {}
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        state = _read_pth(path)
    # Our files carry their config; the authors' (and the parity fixture, whose "constructor"
    # metadata holds their arguments) are read off the tensor shapes.
    config = FusionMambaConfig.from_json(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else infer_config(state)
    return state, config, metadata


def _indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return sorted(found)


def infer_config(state: dict[str, torch.Tensor]) -> FusionMambaConfig:
    """Recover levels, dims, depths, decoder depths, d_state and ablation switches from shapes."""
    try:
        c0 = state["patch_embed1.proj.weight"].shape[0]
    except KeyError:
        raise WeightsFormatError("not a FusionMamba state dict (no patch_embed1.proj.weight)") from None
    levels = _indices(state, r"layers\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise WeightsFormatError("not a FusionMamba state dict (encoder stages missing or not numbered 0..L-1)")
    depths = [len(_indices(state, rf"layers\.{i}\.blocks\.(\d+)\.")) for i in levels]
    depths_decoder = [len(_indices(state, rf"layers_up\.{j}\.blocks\.(\d+)\.")) for j in levels]
    cmfm_a = [k for k in state if re.match(r"Cross_block\.\d+\.self_attention_cross\.A_logs$", k)]
    dvss_a = [k for k in state if re.match(r"layers(_up)?\.\d+\.blocks\.\d+\.op\.A_logs$", k)]
    d_state = state[cmfm_a[0]].shape[1] if cmfm_a else 16
    dvss_d_state = state[dvss_a[0]].shape[1] if dvss_a else 16
    keys = " ".join(state)
    block = "transformer" if ".qkv." in keys else ("evss" if ".local." in keys else "dvss")
    fusion = "dvss" if re.search(r"Cross_block\.\d+\.block\.", keys) else "dffm"
    return FusionMambaConfig(
        dims=tuple(c0 * 2**i for i in levels),
        depths=tuple(depths),
        depths_decoder=tuple(depths_decoder),
        d_state=int(d_state),
        dvss_d_state=int(dvss_d_state),
        drop_path_rate=0.0,
        block=block,
        fusion=fusion,
        use_dfem=fusion == "dvss" or "Cross_layer." in keys,
        use_cmfm=fusion == "dvss" or "self_attention_cross." in keys,
    )


def build_model(state: dict[str, torch.Tensor], config: FusionMambaConfig, source: str = "weights") -> FusionMamba:
    """Instantiate the network for `config` and load `state` strictly (clear error on mismatch)."""
    model = FusionMamba(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise WeightsFormatError(f"{source}: does not fit the FusionMamba architecture: {first[:300]}") from None
    return model


def load_model(
    source: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    scan_backend: str | None = None,
) -> FusionMamba:
    """The network in eval mode from a weights file path or a bundled/downloaded weights name.

    Call it as ``model(x1, x2)`` on (B, 1, H, W) tensors in [0, 1], the authors' order
    (x1 = visible / MRI / phase contrast, x2 = IR / CT / PET / SPECT / GFP). `scan_backend`
    forces a selective-scan backend (see `ops.selective_scan`; None: $FUSIONMAMBA_SCAN_BACKEND or auto).
    """
    path = resolve_weights(source)
    state, config, _ = read_checkpoint(path)
    model = build_model(state, config, str(path))
    model.eval()
    model.set_scan_backend(scan_backend)
    if dtype is not None:
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device=device)
    return model


def save_weights(
    model: FusionMamba,
    path: str | os.PathLike,
    *,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` as safetensors with its config in the metadata, atomically; constants dropped.

    `base_mask` buffers are left out when they hold their defined all-ones value (rebuilt on load).
    """
    path = Path(path)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("base_mask") and bool((value == 1).all()):
            continue
        tensor = value.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous()
    meta = {CONFIG_KEY: model.config.to_json(), "format": "pt"}
    meta.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, safetensors_bytes(state, metadata=meta))
    return path


__all__ = ["build_model", "infer_config", "load_model", "read_checkpoint", "read_tensors", "save_weights"]

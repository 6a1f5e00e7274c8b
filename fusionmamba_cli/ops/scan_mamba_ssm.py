"""The compiled mamba-ssm kernel behind our scan contract (used only when it imports)."""

from __future__ import annotations

import torch


def is_available() -> bool:
    """True when mamba-ssm's compiled selective-scan extension imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import selective_scan_cuda  # noqa: F401
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Call mamba-ssm's `selective_scan_fn`; it takes our layout as is (B, C grouped per direction)."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    out = selective_scan_fn(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
        D=None if D is None else D.float().contiguous(), z=None,
        delta_bias=None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus=delta_softplus, return_last_state=False,
    )
    return out.to(u.dtype)

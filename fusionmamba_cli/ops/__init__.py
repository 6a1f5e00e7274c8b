"""Tensor-in, tensor-out operations: the selective scan and its backends, and the ES2D scan layout."""

from fusionmamba_cli.ops.selective_scan import (
    available_backends,
    resolve_backend,
    selective_scan,
)

__all__ = ["available_backends", "resolve_backend", "selective_scan"]

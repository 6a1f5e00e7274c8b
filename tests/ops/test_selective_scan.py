"""The pure-PyTorch scan against the sequential reference: forward and gradients, long sequences,
large steps; and the backend dispatcher's choices."""

from __future__ import annotations

import importlib
import json
import os

import pytest
import torch

from fusionmamba_cli.ops import selective_scan
from fusionmamba_cli.ops.scan_reference import selective_scan_ref
from fusionmamba_cli.ops.scan_torch import blocked_linear_recurrence, selective_scan_torch
from fusionmamba_cli.ops.selective_scan import resolve_backend


def _inputs(length: int, *, batch=2, groups=4, per_group=3, n_state=16, dt_scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    channels = groups * per_group
    u = torch.randn(batch, channels, length, generator=g, dtype=dtype)
    delta = torch.randn(batch, channels, length, generator=g, dtype=dtype) * dt_scale
    A = -torch.exp(torch.randn(channels, n_state, generator=g, dtype=dtype))
    B = torch.randn(batch, groups, n_state, length, generator=g, dtype=dtype)
    C = torch.randn(batch, groups, n_state, length, generator=g, dtype=dtype)
    D = torch.randn(channels, generator=g, dtype=dtype)
    bias = torch.randn(channels, generator=g, dtype=dtype)
    return u, delta, A, B, C, D, bias


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("length", [1, 2, 3, 17, 64, 257, 4096])
def test_torch_matches_reference_forward(length):
    args = _inputs(length)
    assert _rel_err(selective_scan_torch(*args), selective_scan_ref(*args)) < 1e-5


def test_torch_matches_reference_at_65536():
    args = _inputs(65536, batch=1, groups=1, per_group=2, n_state=4)
    assert _rel_err(selective_scan_torch(*args), selective_scan_ref(*args)) < 1e-5


@pytest.mark.parametrize("delta_value", [1e-4, 1e-2, 1.0, 10.0])
def test_extreme_step_sizes_stay_finite_and_exact(delta_value):
    """dt from 1e-4 to 10 (A down to -e^3): no overflow, still equal to the reference."""
    u, _, A, B, C, D, _ = _inputs(300, dtype=torch.float32)
    delta = torch.full_like(u, delta_value)
    ours = selective_scan_torch(u, delta, A, B, C, D, None, False)
    ref = selective_scan_ref(u, delta, A, B, C, D, None, False)
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, ref) < 1e-5


@pytest.mark.parametrize("length", [1, 5, 100])
def test_torch_matches_reference_gradients(length):
    args = [t.clone().requires_grad_(True) for t in _inputs(length)]
    grads = []
    for fn in (selective_scan_torch, selective_scan_ref):
        for t in args:
            t.grad = None
        out = fn(*args[:5], args[5], args[6], True)
        out.backward(torch.ones_like(out) + torch.linspace(0, 1, out.numel(), dtype=out.dtype).view_as(out))
        grads.append([t.grad.clone() for t in args])
    for ours, ref in zip(*grads):
        assert _rel_err(ours, ref) < 1e-5


def test_float32_input_returns_float32():
    args = _inputs(10, dtype=torch.float32)
    assert selective_scan_torch(*args).dtype == torch.float32


def test_blocked_recurrence_handles_nonpower_lengths():
    decay = torch.rand(37, 3)
    drive = torch.randn(37, 3)
    h = torch.zeros(3)
    expected = []
    for t in range(37):
        h = decay[t] * h + drive[t]
        expected.append(h)
    assert torch.allclose(blocked_linear_recurrence(decay, drive), torch.stack(expected), atol=1e-6)


def test_dispatcher_takes_an_explicit_cpu_backend_and_rejects_unknown(monkeypatch):
    """(auto on the CPU is the numba backend: tests/ops/test_scan_numba.py)"""
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("reference", "cpu") == "reference"
    with pytest.raises(ValueError, match="unknown scan backend"):
        resolve_backend("cuda-magic", "cpu")


def test_dispatcher_environment_variable(monkeypatch):
    monkeypatch.setenv("FUSIONMAMBA_SCAN_BACKEND", "reference")
    assert resolve_backend(None, "cpu") == "reference"


def test_gpu_backend_on_cpu_falls_back_with_warning(monkeypatch):
    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    with pytest.warns(RuntimeWarning, match="using 'numba'"):  # CPU auto: the fused numba scan
        assert resolve_backend("mamba_ssm", "cpu") == "numba"


def test_front_door_matches_reference():
    args = _inputs(33, dtype=torch.float32)
    ours = selective_scan(*args[:6], delta_bias=args[6], backend="torch")
    assert _rel_err(ours, selective_scan_ref(*args)) < 1e-5


def test_backend_that_fails_at_run_time_falls_back_once(monkeypatch):
    """A GPU kernel that fails to compile on first use: one warning, torch result, never retried."""
    dispatch = importlib.import_module("fusionmamba_cli.ops.selective_scan")

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("PTX compilation failed")

    monkeypatch.setitem(dispatch._loaded, "triton", broken)
    monkeypatch.setattr(dispatch, "resolve_backend", lambda backend, device: "triton" if dispatch._loaded["triton"] else "torch")
    args = _inputs(9, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="failed"):
        first = selective_scan(*args[:6], delta_bias=args[6], backend="triton")
    second = selective_scan(*args[:6], delta_bias=args[6], backend="triton")
    assert calls == [1]
    assert torch.allclose(first, selective_scan_ref(*args), rtol=1e-5, atol=1e-6) and torch.equal(first, second)


def test_environment_variable_is_read_once(monkeypatch):
    """FUSIONMAMBA_SCAN_BACKEND is the process's default, read at the first need; the backend then
    travels as an argument, never through the environment."""
    monkeypatch.setenv("FUSIONMAMBA_SCAN_BACKEND", "reference")
    assert resolve_backend(None, "cpu") == "reference"
    monkeypatch.setenv("FUSIONMAMBA_SCAN_BACKEND", "torch")
    assert resolve_backend(None, "cpu") == "reference"
    assert resolve_backend("torch", "cpu") == "torch"


def test_backend_names_are_the_registered_backends():
    dispatch = importlib.import_module("fusionmamba_cli.ops.selective_scan")
    assert dispatch.BACKEND_NAMES == ("auto", *dispatch._BACKENDS)
    assert dispatch.check_backend_name(" Torch ") == "torch"
    with pytest.raises(ValueError, match="unknown scan backend"):
        dispatch.check_backend_name("cuda-magic")


def test_observers_see_every_call_and_meta_tensors_propagate_shapes():
    dispatch = importlib.import_module("fusionmamba_cli.ops.selective_scan")
    args = _inputs(9, dtype=torch.float32)
    meta = [t.to("meta") for t in args]
    seen = []
    with dispatch.observe_scans(seen.append):
        y = selective_scan(*meta[:6], delta_bias=meta[6])
        selective_scan(*args[:5], None, delta_bias=args[6], backend="torch")
    selective_scan(*args[:6], delta_bias=args[6], backend="torch")  # after the block: not seen
    assert y.device.type == "meta" and y.shape == args[0].shape and y.dtype == args[0].dtype
    assert [(c.batch, c.channels, c.d_state, c.length, c.has_d, c.device.type) for c in seen] == [
        (2, 12, 16, 9, True, "meta"), (2, 12, 16, 9, False, "cpu")]
    assert dispatch._observers == ()


def test_model_backend_is_an_argument_and_a_context(micro_weights):
    """load_model / Fuser take the backend; the model's context manager forces one for a block."""
    from fusionmamba_cli import load_model
    from fusionmamba_cli.fusion.pipeline import Fuser

    before = dict(os.environ)
    model = load_model(micro_weights, scan_backend="reference")
    assert model.scan_backend == "reference"
    assert Fuser(load_model(micro_weights), scan_backend="torch").model.scan_backend == "torch"
    with model.scan_backend_as("torch"):
        assert model.scan_backend == "torch"
    assert model.scan_backend == "reference"
    with pytest.raises(ValueError, match="unknown scan backend"):
        model.set_scan_backend("cuda-magic")
    assert dict(os.environ) == before


def test_cli_scan_backend_is_passed_not_written_to_the_environment(capsys, monkeypatch):
    from tests.cli.helpers import run_cli

    monkeypatch.delenv("FUSIONMAMBA_SCAN_BACKEND", raising=False)
    before = dict(os.environ)
    result = run_cli(capsys, "info", "--json", "--device", "cpu", "--scan-backend", "reference")
    assert result.code == 0 and json.loads(result.out)["scan_backend"] == "reference"
    assert dict(os.environ) == before

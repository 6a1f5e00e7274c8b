"""CompiledForward: the same output as the network through torch.compile, and a clean eager fallback
(one warning) when compiling fails; out-of-memory errors are not swallowed."""

from __future__ import annotations

import warnings

import pytest
import torch

from fusionmamba_cli.model import create_model
from fusionmamba_cli.model import compiled as compiled_mod
from fusionmamba_cli.model.compiled import CompiledForward


def _pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 32, 32, generator=gen), torch.rand(1, 1, 32, 32, generator=gen)


@pytest.fixture(autouse=True)
def _compile_on_cpu_too(monkeypatch):
    """These tests run on the CPU; the real rule (CUDA only) is tested on its own below."""
    monkeypatch.setattr(compiled_mod, "DEVICE_TYPES", ("cuda", "cpu"))


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return create_model("micro").eval()


def test_compiled_matches_the_network(micro):
    # The "eager" backend runs TorchDynamo's capture without code generation: fast enough for CI,
    # and it exercises the graph breaks around the scan dispatch.
    compiled = CompiledForward(micro, backend="eager")
    x1, x2 = _pair()
    with torch.inference_mode():  # eager CPU runs the fused kernels, the capture torch ops: rounding differs
        assert torch.allclose(compiled(x1, x2), micro(x1, x2), atol=1e-5)
    assert compiled.enabled and compiled.failure is None


def _runs_eagerly_after_one_warning(compiled: CompiledForward, micro, match: str) -> None:
    """Two calls: the first warns (`match`), the second does not; both give the plain network's output."""
    x1, x2 = _pair()
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match=match):
            first = compiled(x1, x2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = compiled(x1, x2)
        assert torch.equal(first, micro(x1, x2)) and torch.equal(second, first)


def test_a_failing_compile_falls_back_once_with_a_warning(micro, monkeypatch):
    calls = []

    def broken(*_args, **_kwargs):
        calls.append(1)
        raise RuntimeError("inductor: no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda model, **_kw: broken)
    compiled = CompiledForward(micro)
    _runs_eagerly_after_one_warning(compiled, micro, "no C\\+\\+ compiler found")
    assert len(calls) == 1 and not compiled.enabled and "RuntimeError" in compiled.failure


def test_compile_unavailable_at_construction_runs_eagerly(micro, monkeypatch):
    def unsupported(*_args, **_kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.warns(RuntimeWarning, match="Dynamo is not supported"):
        compiled = CompiledForward(micro)
    x1, x2 = _pair()
    with torch.inference_mode():
        assert torch.equal(compiled(x1, x2), micro(x1, x2))


def test_out_of_memory_is_not_swallowed(micro, monkeypatch):
    def oom(*_args, **_kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch, "compile", lambda model, **_kw: oom)
    compiled = CompiledForward(micro)
    with pytest.raises(RuntimeError, match="out of memory"):
        compiled(*_pair())
    assert compiled.enabled


def test_disabled_by_flag_or_environment(micro, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile must not be called"))
    assert not CompiledForward(micro, enabled=False).enabled
    monkeypatch.setenv("FUSIONMAMBA_COMPILE", "0")
    assert not CompiledForward(micro).enabled


def test_cpu_inputs_run_uncompiled_with_one_warning(micro, monkeypatch):
    monkeypatch.setattr(compiled_mod, "DEVICE_TYPES", ("cuda",))
    monkeypatch.setattr(torch, "compile", lambda model, **_kw: lambda *a: pytest.fail("compiled code ran on CPU"))
    compiled = CompiledForward(micro)
    _runs_eagerly_after_one_warning(compiled, micro, "only used on cuda")
    assert compiled.enabled and not compiled.used

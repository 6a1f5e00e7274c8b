"""GraphedForward: eager where graphs do not apply, LRU cache of captures, eager fallback with one
warning when a capture fails, and (on a CUDA machine) the same output as the eager network."""

from __future__ import annotations

import warnings

import pytest
import torch

from fusionmamba_cli.model import create_model
from fusionmamba_cli.model import graphed as graphed_mod
from fusionmamba_cli.model.graphed import GraphedForward


def _pair(shape=(1, 1, 32, 32), seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen).to(device), torch.rand(shape, generator=gen).to(device)


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: replay runs the function on the static inputs."""

    def __init__(self, fn, first, second, output):
        self.fn, self.first, self.second, self.output = fn, first, second, output
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.output.copy_(self.fn(self.first, self.second))


def _fake_capture(runner: GraphedForward):
    captures = []

    def capture(first, second):
        a, b = first.clone(), second.clone()
        out = runner.forward(a, b)
        captures.append(tuple(first.shape))
        return graphed_mod._Captured(_FakeGraph(runner.forward, a, b, out), a, b, out)

    return capture, captures


def test_cpu_tensors_run_eagerly_and_capture_nothing():
    model = create_model("micro").eval()
    runner = GraphedForward(model)
    x1, x2 = _pair()
    with torch.inference_mode():
        assert torch.equal(runner(x1, x2), model(x1, x2))
    assert runner.captured_shapes == []
    assert runner.enabled  # CPU input does not switch graphs off for later CUDA inputs


def test_environment_variable_turns_graphs_off(monkeypatch):
    monkeypatch.setenv(graphed_mod.ENV_VAR, "0")
    assert not GraphedForward(lambda a, b: a + b).enabled
    monkeypatch.setenv(graphed_mod.ENV_VAR, "1")
    assert GraphedForward(lambda a, b: a + b).enabled
    assert not GraphedForward(lambda a, b: a + b, enabled=False).enabled


def test_second_call_of_a_shape_captures_then_replays_and_lru_evicts(monkeypatch):
    runner = GraphedForward(lambda a, b: torch.maximum(a, b) * 2, max_graphs=2)
    capture, captures = _fake_capture(runner)
    monkeypatch.setattr(runner, "applies_to", lambda first: True)
    monkeypatch.setattr(runner, "_capture", capture)
    with torch.inference_mode():
        a0, b0 = _pair((1, 1, 8, 8), seed=0)
        a1, b1 = _pair((1, 1, 8, 8), seed=1)
        a2, b2 = _pair((1, 1, 8, 8), seed=2)
        assert torch.equal(runner(a0, b0), torch.maximum(a0, b0) * 2)
        assert captures == []  # a shape's first call runs eagerly
        out1 = runner(a1, b1)  # second call: captured
        out2 = runner(a2, b2)  # third: replayed, not captured again
        assert captures == [(1, 1, 8, 8)]
        assert torch.equal(out1, torch.maximum(a1, b1) * 2)  # not overwritten by the later replay
        assert torch.equal(out2, torch.maximum(a2, b2) * 2)
        for shape in ((1, 1, 16, 16), (2, 1, 8, 8)):  # two more shapes, each called twice
            runner(*_pair(shape))
            runner(*_pair(shape))
    assert runner.captured_shapes == [(1, 1, 16, 16), (2, 1, 8, 8)]  # least recently used 8x8 dropped
    assert len(captures) == 3


def test_failed_capture_warns_once_and_runs_eagerly(monkeypatch):
    calls = []

    def forward(a, b):
        calls.append(1)
        return a - b

    runner = GraphedForward(forward)
    monkeypatch.setattr(runner, "applies_to", lambda first: runner.enabled)

    def broken_capture(first, second):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runner, "_capture", broken_capture)
    x1, x2 = _pair()
    assert torch.equal(runner(x1, x2), x1 - x2)  # first call of the shape: eager, no capture yet
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        out = runner(x1, x2)
    assert torch.equal(out, x1 - x2)
    assert not runner.enabled and "stream is capturing" in runner.failure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(runner(x1, x2), x1 - x2)  # eager from now on, no second warning


def test_out_of_memory_at_capture_frees_graphs_and_runs_eagerly(monkeypatch):
    runner = GraphedForward(lambda a, b: a + b)
    capture, _ = _fake_capture(runner)
    monkeypatch.setattr(runner, "applies_to", lambda first: True)
    monkeypatch.setattr(runner, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    x1, x2 = _pair()
    runner(x1, x2)
    runner(x1, x2)
    assert runner.captured_shapes == [(1, 1, 32, 32)]

    def out_of_memory(first, second):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner, "_capture", out_of_memory)
    y1, y2 = _pair((1, 1, 16, 16))
    runner(y1, y2)
    assert torch.equal(runner(y1, y2), y1 + y2)  # second call: capture runs out of memory -> eager
    assert runner.captured_shapes == [] and runner.enabled  # graphs freed, still on for later


def test_gradients_enabled_run_eagerly(monkeypatch):
    runner = GraphedForward(lambda a, b: a * b)
    monkeypatch.setattr(runner, "_capture", lambda *a: pytest.fail("must not capture with autograd on"))
    x1, x2 = _pair()
    x1.requires_grad_(True)
    out = runner(x1, x2)
    out.sum().backward()
    assert torch.allclose(x1.grad, x2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("preset", ["micro", "compact"])
def test_graphed_network_matches_eager_on_cuda(preset):
    torch.manual_seed(0)
    model = create_model(preset).eval().cuda()
    runner = GraphedForward(model)
    with torch.inference_mode():
        for shape, seed in (((1, 1, 64, 64), 0), ((1, 1, 64, 64), 1), ((1, 1, 64, 64), 2),
                            ((2, 1, 48, 80), 3), ((2, 1, 48, 80), 4)):
            x1, x2 = _pair(shape, seed, "cuda")
            expected = model(x1, x2)
            got = runner(x1, x2)
            assert runner.enabled, runner.failure
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert len(runner.captured_shapes) == 2

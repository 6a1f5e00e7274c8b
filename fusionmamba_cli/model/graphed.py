"""Inference through captured CUDA graphs: the network's forward launches hundreds of small kernels
whose Python/launch overhead dominates on a GPU (see BENCHMARKS.md), so for each input shape the
forward is captured once and replayed as one graph afterwards.

`GraphedForward(model)(x1, x2)` behaves like `model(x1, x2)` under `torch.inference_mode()`: same
outputs, a fresh tensor each call. A shape's first call runs eagerly (a one-off size, e.g. in a folder
of mixed sizes, would pay the capture for nothing); its second call captures; later calls replay. It
runs the model eagerly when graphs do not apply (CPU tensors, gradients enabled, disabled by
FUSIONMAMBA_CUDA_GRAPHS=0) and falls back to eager for good, with one warning, if a capture fails.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

ENV_VAR = "FUSIONMAMBA_CUDA_GRAPHS"
DEFAULT_MAX_GRAPHS = 4  # shapes kept captured at once (each holds its own activation memory)
MAX_SEEN_SHAPES = 256  # shapes remembered as seen once (a capture waits for a shape's second call)
WARMUP_CALLS = 2  # eager side-stream calls before capture: compiles kernels, settles allocations

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GraphKey = tuple[tuple[int, ...], tuple[int, ...], torch.dtype, torch.device]


def graphs_enabled_by_env() -> bool:
    """False when FUSIONMAMBA_CUDA_GRAPHS is 0/false/no/off (the user's global opt-out)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    first: torch.Tensor
    second: torch.Tensor
    output: torch.Tensor


class GraphedForward:
    """A two-input forward that replays one captured CUDA graph per input shape (LRU, bounded)."""

    def __init__(self, forward: Forward, *, max_graphs: int = DEFAULT_MAX_GRAPHS, enabled: bool = True) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        self.forward = forward
        self.max_graphs = max_graphs
        self.enabled = enabled and graphs_enabled_by_env()
        self.failure: str | None = None  # why graphs were switched off, if a capture failed
        self._graphs: OrderedDict[GraphKey, _Captured] = OrderedDict()
        self._seen: OrderedDict[GraphKey, None] = OrderedDict()

    @property
    def captured_shapes(self) -> list[tuple[int, ...]]:
        return [key[0] for key in self._graphs]

    def applies_to(self, first: torch.Tensor) -> bool:
        """Graphs are used for CUDA tensors without autograd, while enabled."""
        return self.enabled and first.is_cuda and not torch.is_grad_enabled()

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        if not self.applies_to(first):
            return self.forward(first, second)
        key: GraphKey = (tuple(first.shape), tuple(second.shape), first.dtype, first.device)
        captured = self._graphs.get(key)
        if captured is None and not self._seen_before(key):
            return self.forward(first, second)
        if captured is None:
            try:
                captured = self._capture(first, second)
            except torch.cuda.OutOfMemoryError:  # graphs keep their memory: free them, run this call eagerly
                self.clear()
                torch.cuda.empty_cache()
                return self.forward(first, second)
            except Exception as exc:  # noqa: BLE001 - any capture problem means: run eagerly from now on
                self._disable(exc)
                return self.forward(first, second)
            self._remember(key, captured)
        else:
            self._graphs.move_to_end(key)
        captured.first.copy_(first)
        captured.second.copy_(second)
        captured.graph.replay()
        return captured.output.clone()  # the next replay overwrites the static output

    def _seen_before(self, key: GraphKey) -> bool:
        """True from a shape's second call on; remembers the first (bounded, least recent dropped)."""
        if key in self._seen:
            return True
        self._seen[key] = None
        while len(self._seen) > MAX_SEEN_SHAPES:
            self._seen.popitem(last=False)
        return False

    def clear(self) -> None:
        """Drop every captured graph (and the memory it holds)."""
        self._graphs.clear()

    def _remember(self, key: GraphKey, captured: _Captured) -> None:
        self._graphs[key] = captured
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)

    def _disable(self, exc: BaseException) -> None:
        self.enabled = False
        self.clear()
        self.failure = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        warnings.warn(f"CUDA graph capture failed ({self.failure}); running the network eagerly", RuntimeWarning, stacklevel=3)

    def _capture(self, first: torch.Tensor, second: torch.Tensor) -> _Captured:
        """Warm up on a side stream (as torch.cuda.graphs requires), then capture one forward."""
        static_first, static_second = first.clone(), second.clone()
        side = torch.cuda.Stream(device=first.device)
        side.wait_stream(torch.cuda.current_stream(first.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.forward(static_first, static_second)
        torch.cuda.current_stream(first.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.forward(static_first, static_second)
        return _Captured(graph, static_first, static_second, output)


__all__ = ["DEFAULT_MAX_GRAPHS", "ENV_VAR", "GraphedForward", "graphs_enabled_by_env"]

"""LDC's kernel is reused across inference calls and recomputed whenever a weight changes."""

from __future__ import annotations

import torch

from fusionmamba_cli.model.layers import LDC


def _ldc(seed: int = 0) -> LDC:
    torch.manual_seed(seed)
    ldc = LDC(8)
    with torch.no_grad():
        ldc.learnable_mask.uniform_(0, 2)
    return ldc


def _map() -> torch.Tensor:
    """A channels-first view of a channels-last map, as the blocks give LDC."""
    return torch.randn(1, 6, 6, 8).permute(0, 3, 1, 2)


def test_inference_reuses_the_kernel_and_matches_autograd_mode():
    ldc, x = _ldc(), _map()
    with torch.inference_mode():
        first = ldc(x)
        kernel = ldc.inference_weight()
        assert ldc.inference_weight() is kernel  # computed once
    assert torch.equal(first, ldc(x).detach())  # autograd on: computed afresh, same values


def test_a_changed_weight_is_picked_up():
    ldc, x = _ldc(), _map()
    with torch.inference_mode():
        before = ldc(x)
    with torch.no_grad():
        ldc.learnable_theta.fill_(0.9)  # in place, as an optimiser step does
    with torch.inference_mode():
        after = ldc(x)
    assert not torch.equal(before, after)
    assert torch.equal(after, torch.nn.functional.conv2d(x, ldc.effective_weight().detach(), padding=1))
    ldc.load_state_dict(_ldc(seed=1).state_dict())
    with torch.inference_mode():
        assert torch.equal(ldc(x), _ldc(seed=1)(x))

"""Layers whose CPU-fast formulation must stay the op the authors wrote: ECA's channel conv as its
three taps, PatchEmbed's stride-p conv as a matmul over patches."""

from __future__ import annotations

import torch

from fusionmamba_cli.model.layers import ECA, PatchEmbed


def test_eca_taps_equal_the_conv1d_it_declares():
    torch.manual_seed(0)
    eca = ECA()
    x = torch.randn(3, 5, 7, 11)
    weights = torch.sigmoid(eca.conv(x.mean(dim=(1, 2))[:, None, :]))[:, 0]
    expected = x * weights[:, None, None, :]
    out = eca(x)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()  # still trains: the taps get gradients
    assert eca.conv.weight.grad is not None and eca.conv.weight.grad.abs().sum() > 0


def test_patch_embed_matmul_equals_the_strided_conv():
    torch.manual_seed(1)
    embed = PatchEmbed(16, patch_size=4)
    x = torch.rand(2, 1, 24, 36)
    expected = embed.norm(embed.proj(x).permute(0, 2, 3, 1))
    out = embed(x)
    assert out.shape == (2, 6, 9, 16)
    assert torch.allclose(out, expected, atol=1e-5)
    ragged = torch.rand(1, 1, 26, 37)  # not a multiple of 4: the conv's own path (drops the remainder)
    assert torch.equal(embed(ragged), embed.norm(embed.proj(ragged).permute(0, 2, 3, 1)))

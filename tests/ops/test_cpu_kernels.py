"""The fused CPU kernels (ops/cpu_kernels.py) against the torch ops they replace: small and odd
sizes, a 1x1 map (L = 1), non-contiguous inputs; the gate that picks them (ops/fused.py); the
model with them on and off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("numba")

from fusionmamba_cli.model import create_model  # noqa: E402
from fusionmamba_cli.model.layers import LayerNorm, PatchExpand  # noqa: E402
from fusionmamba_cli.ops import cpu_kernels  # noqa: E402
from fusionmamba_cli.ops.es2d import es2d_merge, es2d_scan, es2d_scan_time_major  # noqa: E402
from fusionmamba_cli.ops.fused import ENV_VAR, cpu_kernels_for  # noqa: E402

TOL = 1e-5  # relative to the reference's largest magnitude


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def _affine(channels: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(channels, generator=g), torch.randn(channels, generator=g)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (2, 5, 3, 7), (1, 8, 8, 16), (1, 3, 4, 256)])
def test_layer_norm_and_its_mean(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 1
    w, b = _affine(shape[-1], g)
    ref = F.layer_norm(x, shape[-1:], w, b, 1e-5)
    got = cpu_kernels.layer_norm(x, w, b, 1e-5)
    assert got.shape == ref.shape and got.is_contiguous()
    assert _rel_err(got, ref) < TOL
    assert _rel_err(cpu_kernels.layer_norm_mean(x, w, b, 1e-5), ref.mean(dim=(1, 2))) < TOL


def test_layer_norm_of_a_permuted_view():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 5, 7, generator=g).permute(0, 2, 3, 1)  # channels-first conv output, viewed
    w, b = _affine(6, g)
    assert _rel_err(cpu_kernels.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (6,), w, b, 1e-5)) < TOL


@pytest.mark.parametrize("batch,channels,height,width", [(1, 3, 1, 1), (2, 5, 7, 9), (1, 4, 6, 6), (1, 16, 5, 18)])
def test_merge_norm_matches_es2d_merge_then_layer_norm(batch, channels, height, width):
    g = torch.Generator().manual_seed(2)
    length = ((height + 1) // 2) * ((width + 1) // 2)
    ys = torch.randn(batch, 4 * channels, length, generator=g)
    w, b = _affine(channels, g)
    merged = es2d_merge(ys.reshape(batch, 4, channels, length), height, width).permute(0, 2, 3, 1)
    got = cpu_kernels.merge_norm(ys, height, width, w, b, 1e-5)
    assert got.shape == (batch, height, width, channels)
    assert _rel_err(got, F.layer_norm(merged, (channels,), w, b, 1e-5)) < TOL


@pytest.mark.parametrize("batch,channels,height,width", [(1, 3, 1, 1), (2, 5, 7, 9), (1, 16, 5, 18)])
def test_merge_norm_time_major_matches_es2d_merge_then_layer_norm(batch, channels, height, width):
    g = torch.Generator().manual_seed(5)
    length = ((height + 1) // 2) * ((width + 1) // 2)
    ys = torch.randn(batch, 4, length, channels, generator=g)  # the numba scan's (B, K, L, D)
    w, b = _affine(channels, g)
    merged = es2d_merge(ys.transpose(2, 3), height, width).permute(0, 2, 3, 1)
    got = cpu_kernels.merge_norm_time_major(ys, height, width, w, b, 1e-5)
    assert got.shape == (batch, height, width, channels)
    assert _rel_err(got, F.layer_norm(merged, (channels,), w, b, 1e-5)) < TOL


@pytest.mark.parametrize("height,width", [(1, 1), (5, 7), (8, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_es2d_time_major_layout_is_the_transposed_sequences(height, width, channels_last):
    x = torch.randn(2, 3, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(es2d_scan_time_major(x), es2d_scan(x).transpose(2, 3))


@pytest.mark.parametrize("height,width", [(1, 1), (3, 5)])
def test_norm_project_matches_patch_expand_then_conv(height, width):
    torch.manual_seed(3)
    up, conv = PatchExpand(16, scale=4), torch.nn.Conv2d(4, 1, 1)
    with torch.no_grad():
        up.norm.weight.normal_()
        up.norm.bias.normal_()
        x = torch.randn(2, height, width, 16)
        ref = conv(up(x).permute(0, 3, 1, 2))
        got = cpu_kernels.norm_project(up.expand(x), 4, up.norm.weight, up.norm.bias, up.norm.eps, conv.weight, conv.bias)
    assert got.shape == ref.shape == (2, 1, 4 * height, 4 * width)
    assert _rel_err(got, ref) < TOL


def test_gate_takes_only_fp32_cpu_inference(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    x = torch.randn(2, 3)
    w = torch.nn.Parameter(torch.randn(3))
    assert cpu_kernels_for(x) is cpu_kernels
    assert cpu_kernels_for(x.double()) is None
    assert cpu_kernels_for(x, w) is None  # autograd wanted: the torch ops
    with torch.no_grad():
        assert cpu_kernels_for(x, w) is cpu_kernels
    monkeypatch.setenv(ENV_VAR, "0")
    assert cpu_kernels_for(x) is None


def test_layer_norm_module_keeps_autograd_and_state_dict():
    norm = LayerNorm(5)
    x = torch.randn(2, 3, 5, requires_grad=True)
    norm(x).sum().backward()  # the torch path: gradients flow
    assert x.grad is not None and norm.weight.grad is not None
    assert list(norm.state_dict()) == list(torch.nn.LayerNorm(5).state_dict())


@pytest.mark.parametrize("preset", ["micro", "fixture"])
def test_model_with_and_without_the_kernels(preset, monkeypatch):
    """The whole forward, odd input size included, fused kernels on vs off (torch ops)."""
    torch.manual_seed(4)
    model = create_model(preset).eval()
    for module in model.modules():  # random affine LayerNorms, so a slip in weight/bias shows
        if isinstance(module, torch.nn.LayerNorm):
            with torch.no_grad():
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
    x1, x2 = torch.rand(2, 1, 1, 37, 45)
    with torch.inference_mode():
        monkeypatch.setenv(ENV_VAR, "1")
        fused = model(x1, x2)
        monkeypatch.setenv(ENV_VAR, "0")
        plain = model(x1, x2)
    assert _rel_err(fused, plain) < TOL


def test_forward_hooks_still_see_the_modules_the_kernels_fuse():
    model = create_model("micro").eval()
    seen = []
    model.final_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model.layers[0].blocks[0].op.out_norm.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.inference_mode():
        model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    assert len(seen) == 3  # out_norm per encoder stream, then the head's conv


def test_kernels_give_the_same_bits_on_any_thread_count():
    """The row-parallel kernels split rows over torch's threads; the values must not depend on it."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 37, 29, 16, generator=g)  # 1073 rows a batch item: several blocks of the mean
    ys = torch.randn(2, 4, 19 * 15, 8, generator=g)
    w, b = _affine(16, g)
    w8, b8 = _affine(8, g)

    def run():
        return (cpu_kernels.layer_norm(x, w, b, 1e-5), cpu_kernels.layer_norm_mean(x, w, b, 1e-5),
                cpu_kernels.merge_norm_time_major(ys, 37, 29, w8, b8, 1e-5))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(2)
        double = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single, double))


def test_squeeze_excite_gate_matches_the_torch_layers():
    from fusionmamba_cli.model.layers import SqueezeExcite

    torch.manual_seed(11)
    se = SqueezeExcite(24)
    with torch.no_grad():
        for p in se.parameters():
            p.normal_(0, 0.5)
        x = torch.randn(2, 9, 7, 24) * 2
        ref = torch.sigmoid(se.channel_select(F.gelu(se.global_reduce(se.norm(x).mean(dim=(1, 2))))))
        got = cpu_kernels.squeeze_excite_gate(x, se.norm.weight, se.norm.bias, se.norm.eps, se.global_reduce.weight,
                                              se.global_reduce.bias, se.channel_select.weight, se.channel_select.bias)
    assert got.shape == (2, 24) and _rel_err(got, ref) < TOL

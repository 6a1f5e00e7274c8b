"""The two-scale rule and the network's two_scale output skip."""

import cv2
import numpy as np
import pytest
import torch

from fusionmamba_cli.model import FusionMamba, get_preset
from fusionmamba_cli.model.two_scale import TASK_RULES, TwoScaleParams, config_fields, gaussian_blur, two_scale_fusion


def _blur_cv2(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    return cv2.GaussianBlur(x, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101)


def _rule_numpy(a: np.ndarray, b: np.ndarray, p: TwoScaleParams) -> np.ndarray:
    """The rule written out with OpenCV, independently of the torch code."""
    top = np.maximum(a, b)
    if p.smooth_x2:
        b = _blur_cv2(b, p.smooth_x2)
    base_a, base_b = _blur_cv2(a, p.base_sigma), _blur_cv2(b, p.base_sigma)
    da, db = a - base_a, b - base_b
    choice = (_blur_cv2(da * da, p.energy_sigma) > _blur_cv2(db * db, p.energy_sigma)).astype(np.float64)
    w = _blur_cv2(choice, p.weight_sigma) if p.weight_sigma else choice
    fused = np.maximum(base_a, base_b) + p.detail_gain * (w * da + (1 - w) * db)
    return np.clip(np.maximum(fused, p.floor * top), 0, 1)


@pytest.mark.parametrize("sigma,gain,floor", [(2.0, 1.0, 0.0), (4.0, 1.1, 0.3), (8.0, 1.0, 0.5)])
def test_rule_matches_an_opencv_reading_of_the_formula(sigma, gain, floor):
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.random((70, 90)), (0, 0), 2)
    b = rng.random((70, 90)) * 0.5 + np.linspace(0, 0.5, 90)[None]
    p = TwoScaleParams(base_sigma=sigma, detail_gain=gain, floor=floor)
    _check_against_opencv(a, b, p)


@pytest.mark.parametrize("task", sorted(TASK_RULES))
def test_each_task_rule_matches_the_opencv_reading(task):
    """Energy window, hard choice (weight_sigma 0) and the x2 pre-blur, as each task uses them."""
    rng = np.random.default_rng(2)
    a = cv2.GaussianBlur(rng.random((80, 96)), (0, 0), 1.5)
    b = np.kron(rng.random((20, 24)), np.ones((4, 4)))  # a block-upsampled scan, as PET/SPECT come
    _check_against_opencv(a, b, TASK_RULES[task])


def _check_against_opencv(a: np.ndarray, b: np.ndarray, p: TwoScaleParams) -> None:
    got = two_scale_fusion(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], p)[0, 0].numpy()
    np.testing.assert_allclose(got, _rule_numpy(a, b, p), atol=1e-9)


def test_rule_keeps_a_source_where_the_other_is_flat():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(0.3 + 0.2 * rng.random((1, 1, 64, 64)))
    flat = torch.full_like(a, 0.1)  # darker and detail-free: the fusion is A itself
    np.testing.assert_allclose(two_scale_fusion(a, flat).numpy(), a.numpy(), atol=1e-6)


def test_blur_handles_crops_smaller_than_the_kernel():
    x = torch.rand(2, 1, 5, 7)
    out = gaussian_blur(x, 8.0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert float(out.std()) < float(x.std())


@pytest.mark.parametrize("shape,sigma", [((1, 1, 64, 48), 8.0), ((2, 3, 9, 11), 1.0), ((1, 1, 5, 7), 8.0), ((1, 1, 1, 1), 2.0)])
def test_cpu_inference_blur_equals_the_conv_blur(shape, sigma, monkeypatch):
    """fp32 CPU inference blurs with OpenCV (reflected and, for crops under the radius, replicated
    borders); the conv path (gradients, GPUs, kernels off) gives the same values to rounding."""
    pytest.importorskip("numba")
    x = torch.rand(shape)
    fast = gaussian_blur(x, sigma)
    monkeypatch.setenv("FUSIONMAMBA_CPU_KERNELS", "0")
    conv = gaussian_blur(x, sigma)
    assert fast.shape == x.shape and (fast - conv).abs().max() < 1e-6
    leaf = x.clone().requires_grad_(True)
    monkeypatch.delenv("FUSIONMAMBA_CPU_KERNELS")
    gaussian_blur(leaf, sigma).sum().backward()  # wants gradients: the differentiable conv path
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_untrained_two_scale_network_is_the_rule_and_its_params_travel():
    torch.manual_seed(0)
    config = get_preset("compact-two-scale", two_scale_sigma=8.0, two_scale_gain=1.1)
    model = FusionMamba(config).eval()
    a, b = torch.rand(1, 1, 40, 56), torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        out = model(a, b)
    expected = two_scale_fusion(a, b, TwoScaleParams(base_sigma=8.0, detail_gain=1.1))
    assert torch.equal(out, expected)
    assert type(config).from_json(config.to_json()) == config


def test_two_scale_params_must_be_positive():
    with pytest.raises(ValueError, match="two_scale"):
        get_preset("compact-two-scale", two_scale_sigma=0.0)


def test_floor_stops_the_halo_beside_a_strong_edge():
    """A bright block in A (CT bone) beside mid-grey, flat B (MRI tissue): A's detail just outside
    the block is strongly negative and would crush B's tissue to black without the floor."""
    a = torch.zeros(1, 1, 48, 48)
    a[..., :, :20] = 1.0
    b = torch.full_like(a, 0.3)
    crushed = two_scale_fusion(a, b, TwoScaleParams(floor=0.0))
    kept = two_scale_fusion(a, b, TwoScaleParams(floor=0.3))
    assert float(crushed[..., 20:24].min()) < 1e-6  # black next to the block, though B is 0.3 there
    assert float(kept.min()) >= 0.3 * 0.3 - 1e-6


def test_task_rules_travel_through_the_config():
    for rule in TASK_RULES.values():
        model = FusionMamba(get_preset("compact-two-scale", **config_fields(rule)))
        assert model.two_scale_params == rule


def test_x2_pre_blur_softens_block_edges_but_the_floor_uses_the_source():
    a = torch.full((1, 1, 48, 48), 0.2)
    b = torch.from_numpy(np.kron(np.random.default_rng(3).random((12, 12)), np.ones((4, 4))))[None, None].float()
    sharp = two_scale_fusion(a, b, TwoScaleParams(floor=0.0))
    soft = two_scale_fusion(a, b, TwoScaleParams(floor=0.0, smooth_x2=1.0))
    steps = lambda x: float((x[..., :, 1:] - x[..., :, :-1]).abs().amax())
    assert steps(soft) < 0.8 * steps(sharp)
    floored = two_scale_fusion(a, b, TwoScaleParams(floor=0.9, smooth_x2=2.0))
    assert bool((floored >= 0.9 * torch.maximum(a, b) - 1e-6).all())


def test_negative_choice_softening_is_refused():
    with pytest.raises(ValueError, match="two_scale_weight_sigma"):
        get_preset("compact-two-scale", two_scale_weight_sigma=-1.0)

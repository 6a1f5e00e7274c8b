"""Training objectives (`train --loss`): each term, the differentiable VIF and Qabf, the hold-out split."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fusionmamba_cli.metrics import qabf, vifp
from fusionmamba_cli.model.two_scale import TwoScaleParams, two_scale_fusion
from fusionmamba_cli.training.data import PairSet, holdout_mask, split_holdout
from fusionmamba_cli.training.losses import (
    LOSS_NAMES,
    Objective,
    authors_loss,
    ms_ssim_authors,
    qabf_differentiable,
    sobel_xy,
    two_scale_loss,
    vif_differentiable,
)


def _images(seed: int = 0, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    a = 0.5 + 0.3 * np.sin(12 * xx) * np.cos(7 * yy) + 0.05 * rng.standard_normal((size, size))
    b = np.where(xx + yy > 1, 0.8, 0.2) + 0.02 * rng.standard_normal((size, size))
    to = lambda x: torch.from_numpy(np.clip(x, 0, 1)).float()[None, None]  # noqa: E731
    return to(a), to(b)


def test_differentiable_vif_equals_the_metric():
    a, b = _images()
    f = torch.maximum(a, b)
    q = lambda t: np.rint(t[0, 0].double().numpy() * 255)  # noqa: E731
    ref, fused = q(a), q(f)
    got = vif_differentiable(torch.from_numpy(ref / 255)[None, None], torch.from_numpy(fused / 255)[None, None])
    assert got.item() == pytest.approx(vifp(ref, fused), rel=1e-9)


def test_vif_reward_has_a_gradient_and_rewards_contrast_gain():
    a, _ = _images()
    f = a.clone().requires_grad_(True)
    vif_differentiable(a, f).sum().backward()
    assert f.grad is not None and float(f.grad.abs().max()) > 0
    stretched = (a - a.mean()) * 1.2 + a.mean()  # VIF exceeds 1 for contrast gain
    assert vif_differentiable(a, stretched).item() > vif_differentiable(a, a).item()


def test_differentiable_qabf_equals_the_metric_where_no_edge_strengths_tie():
    rng = np.random.default_rng(3)
    a, b, f = (rng.random((40, 52)) * 255 for _ in range(3))  # real-valued: no exact ties of strength
    t = lambda x: torch.from_numpy(x / 255)[None, None]  # noqa: E731
    assert qabf_differentiable(t(a), t(b), t(f)).item() == pytest.approx(qabf(a, b, f), abs=1e-9)


def test_differentiable_qabf_is_close_to_the_metric_on_grey_levels():
    """On 0..255 integers, equal strengths tie; the metric's tie quirk moves it by < 1e-3 there."""
    a, b = _images()
    q = lambda t: np.rint(t[0, 0].double().numpy() * 255)  # noqa: E731
    ref_a, ref_b, fused = q(a), q(b), q(torch.maximum(a, b))
    t = lambda x: torch.from_numpy(x / 255)[None, None]  # noqa: E731
    assert qabf_differentiable(t(ref_a), t(ref_b), t(fused)).item() == pytest.approx(qabf(ref_a, ref_b, fused), abs=1e-3)


def test_qabf_reward_has_a_gradient_and_prefers_the_stronger_edge_kept():
    a, b = _images()
    f = ((a + b) / 2).requires_grad_(True)
    qabf_differentiable(a, b, f).sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and float(f.grad.abs().max()) > 0
    flat = torch.full_like(a, 0.5, requires_grad=True)  # no gradient anywhere: atan2(0, 0) must not poison the backward
    qabf_differentiable(a, b, flat).sum().backward()
    assert torch.isfinite(flat.grad).all()
    blurred = torch.nn.functional.avg_pool2d(torch.maximum(a, b), 3, 1, 1)
    assert qabf_differentiable(a, b, torch.maximum(a, b)).item() > qabf_differentiable(a, b, blurred).item()


def test_qabf_weight_adds_the_qabf_term_to_the_two_scale_loss():
    a, b = _images()
    f = two_scale_fusion(a, b, TwoScaleParams())
    plain, _ = two_scale_loss(f, a, b, TwoScaleParams())
    rewarded, terms = two_scale_loss(f, a, b, TwoScaleParams(), qabf_weight=2.0)
    assert rewarded.item() == pytest.approx(plain.item() - 2.0 * terms["qabf"].item(), abs=1e-5)


def test_two_scale_loss_is_zero_at_its_target_and_grows_away_from_it():
    a, b = _images()
    target = two_scale_fusion(a, b, TwoScaleParams())
    at, terms = two_scale_loss(target, a, b, TwoScaleParams())
    assert at.item() == pytest.approx(0.0, abs=1e-5)
    away, _ = two_scale_loss(target + 0.05 * torch.randn_like(target), a, b, TwoScaleParams())
    assert away.item() > 0.05
    assert set(terms) == {"int", "text", "ssim", "range"}


def test_two_scale_loss_penalises_values_that_would_clip():
    a, b = _images()
    target = two_scale_fusion(a, b, TwoScaleParams())
    _, inside = two_scale_loss(target, a, b, TwoScaleParams())
    _, outside = two_scale_loss(target + 0.5, a, b, TwoScaleParams())
    assert inside["range"].item() == 0 and outside["range"].item() > 0.1


def test_signed_sobel_keeps_orientation():
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)[None, None]
    gx, gy = sobel_xy(ramp)[0]
    assert float(gx[4:-4, 4:-4].min()) > 0 and float(gy.abs().max()) < 1e-6
    assert float(sobel_xy(ramp.flip(-1))[0, 0, 4:-4, 4:-4].max()) < 0


def test_authors_ms_ssim_is_one_for_identical_images_and_lower_otherwise():
    a, b = _images(size=128)
    assert ms_ssim_authors(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim_authors(a, b).item() < 0.9


def test_authors_loss_weights_its_terms_10_10_1():
    a, b = _images(size=128)
    f = (a + b) / 2
    total, terms = authors_loss(f, a, b)
    assert total.item() == pytest.approx(10 * terms["ssim"].item() + 10 * terms["int"].item() + terms["text"].item(), rel=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_objective_trains(name):
    a, b = _images(size=64)
    f = torch.full_like(a, 0.5, requires_grad=True)
    total, terms = Objective(name, vif_weight=0.1, qabf_weight=0.1)(f, a, b)
    total.backward()
    assert torch.isfinite(total) and terms and float(f.grad.abs().sum()) > 0


def test_objective_rejects_unknown_names_and_negative_vif_weights():
    with pytest.raises(ValueError, match="loss must be one of"):
        Objective("max")
    with pytest.raises(ValueError, match="VIF weight"):
        Objective(vif_weight=-1.0)
    with pytest.raises(ValueError, match="Qabf weight"):
        Objective(qabf_weight=float("nan"))


def test_holdout_takes_every_nth_pair_by_name_and_the_last_of_small_tasks():
    names = [f"{i:03d}" for i in range(12)][::-1]  # unsorted on purpose
    mask = holdout_mask(names, 5)
    assert sorted(n for n, m in zip(names, mask) if m) == ["000", "005", "010"]
    assert holdout_mask(["b", "a", "c"], 5) == [False, False, True]


def test_split_holdout_is_disjoint_complete_and_per_task():
    arr = np.zeros((4, 4), np.uint8)
    names = [f"p{i}" for i in range(7)] + ["q0", "q1"]
    tasks = ["ct_mri"] * 7 + ["gfp_pc"] * 2
    pairs = PairSet(list(names), list(tasks), [arr] * 9, [arr] * 9)
    train, held = split_holdout(pairs, 5)
    assert sorted(train.names + held.names) == sorted(names)
    assert not set(train.names) & set(held.names)
    assert set(held.tasks) == {"ct_mri", "gfp_pc"}
    assert split_holdout(pairs, 0) == (pairs, None)

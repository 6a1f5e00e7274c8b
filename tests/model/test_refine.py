"""The full-resolution refinement head (`refine_width`): shape, start near the rule, gradients, files."""

import pytest
import torch

from fusionmamba_cli.model.config import FusionMambaConfig, get_preset
from fusionmamba_cli.model.network import FusionMamba
from fusionmamba_cli.model.refine import RefineHead
from fusionmamba_cli.model.two_scale import two_scale_fusion

MICRO_REFINE = dict(dims=(8, 16), depths=(1, 1), depths_decoder=(1, 1), d_state=4, dvss_d_state=4, drop_path_rate=0.0,
                    output_skip="two_scale", refine_width=6, refine_depth=3)


def test_refine_head_keeps_the_size_and_starts_near_zero():
    torch.manual_seed(0)
    head = RefineHead(width=8, depth=3)
    x = torch.rand(2, 1, 19, 23)
    out = head(x, x.flip(-1), x, torch.zeros_like(x))
    assert out.shape == (2, 1, 19, 23)
    assert 0 < float(out.detach().abs().max()) < 0.05  # off zero (a gradient everywhere), well under a grey level on average


def test_a_refine_model_fuses_near_its_rule_and_every_layer_gets_a_gradient():
    torch.manual_seed(0)
    model = FusionMamba(FusionMambaConfig(**MICRO_REFINE))
    a, b = torch.rand(1, 1, 32, 36), torch.rand(1, 1, 32, 36)
    fused = model(a, b)
    rule = two_scale_fusion(a, b, model.two_scale_params)
    assert fused.shape == a.shape and float((fused - rule).abs().mean()) < 0.02
    fused.square().mean().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.refine.parameters())


def test_models_without_the_field_have_no_refine_head_and_the_preset_has_one():
    assert FusionMamba(get_preset("micro")).refine is None
    assert get_preset("compact-refine").refine_width > 0 and get_preset("compact-refine").output_skip == "two_scale"


def test_refine_head_needs_a_rule_skip():
    with pytest.raises(ValueError, match="refinement head refines a rule"):
        FusionMambaConfig(output_skip="authors", refine_width=8)
    with pytest.raises(ValueError, match="refine_width"):
        FusionMambaConfig(output_skip="two_scale", refine_width=-1)


def test_a_refine_model_round_trips_through_a_weights_file(tmp_path):
    from fusionmamba_cli.checkpoints.files import load_model, save_weights

    torch.manual_seed(0)
    model = FusionMamba(FusionMambaConfig(**MICRO_REFINE)).eval()
    save_weights(model, tmp_path / "r.safetensors")
    loaded = load_model(tmp_path / "r.safetensors", device="cpu")
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(a, b), loaded(a, b))

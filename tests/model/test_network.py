"""Network behaviour beyond parity: any input size, batches, presets, ablations, checkpoint formats."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
import torch

from fusionmamba_cli import create_model, load_model, save_weights
from fusionmamba_cli.checkpoints import infer_config
from fusionmamba_cli.checkpoints.files import CONFIG_KEY
from fusionmamba_cli.errors import WeightsFormatError, WeightsNotFoundError
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig, get_preset, list_presets


@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (17, 9), (33, 64), (131, 257)])
def test_any_size_comes_back_at_its_size(height, width):
    torch.manual_seed(0)
    model = create_model("micro").eval()
    x1, x2 = torch.rand(2, 1, height, width), torch.rand(2, 1, height, width)
    with torch.no_grad():
        out = model(x1, x2)
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = create_model("micro").eval()
    x1, x2 = torch.rand(3, 1, 32, 48), torch.rand(3, 1, 32, 48)
    with torch.no_grad():
        batched = model(x1, x2)
        single = model(x1[1:2], x2[1:2])
    assert torch.allclose(batched[1:2], single, atol=1e-5)


def test_inference_encodes_both_sources_as_one_batch_with_the_same_result():
    """Eval mode runs the shared encoder once on [x1; x2] (batch 2B); training, and a forward hook on
    the encoder, run it per source as the authors' code does. All three give the same fusion."""
    torch.manual_seed(0)
    model = create_model("micro").eval()
    x1, x2 = torch.rand(2, 1, 40, 24), torch.rand(2, 1, 40, 24)
    batches = []
    hook = model.layers[0].register_forward_hook(lambda _m, inputs, _out: batches.append(inputs[0].shape[0]))
    with torch.no_grad():
        per_source = model(x1, x2)
    hook.remove()
    calls = []
    original = model._encode
    model._encode = lambda x: calls.append(x.shape[0]) or original(x)
    with torch.no_grad():
        batched = model(x1, x2)
        model.train()
        trained_path = model(x1, x2)  # micro has no dropout or drop path: the same function
    assert batches == [2, 2] and calls == [4, 2, 2]
    assert torch.allclose(batched, per_source, atol=1e-5) and torch.allclose(trained_path, per_source, atol=1e-5)


def test_mismatched_inputs_are_rejected():
    model = create_model("micro")
    with pytest.raises(ValueError, match="expected two"):
        model(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 32))


def test_presets_exist_and_validate():
    assert {"official", "official-tiny", "compact", "micro"} <= set(list_presets())
    assert get_preset("official").size_multiple == 32
    assert get_preset("fixture").size_multiple == 16
    with pytest.raises(ValueError, match="double"):
        FusionMambaConfig(dims=(16, 24), depths=(1, 1), depths_decoder=(1, 1))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


ABLATIONS = [
    {"block": "evss"},
    {"block": "transformer"},
    {"fusion": "dvss"},
    {"use_dfem": False},
    {"use_cmfm": False},
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_ablation_variants_run_forward_and_backward(overrides):
    torch.manual_seed(0)
    model = create_model("micro", **overrides)
    out = model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("overrides", [{}] + ABLATIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_config_is_inferred_from_shapes(overrides):
    config = get_preset("micro", **overrides)
    state = create_model("micro", **overrides).state_dict()
    inferred = infer_config(state)
    for field in ("dims", "depths", "depths_decoder", "d_state", "dvss_d_state", "block", "fusion", "use_dfem", "use_cmfm"):
        if field == "dvss_d_state" and config.block == "transformer":
            continue  # no DVSS scans in that variant: nothing to infer it from
        if field == "d_state" and (config.fusion == "dvss" or not config.use_cmfm):
            continue  # no CMFM scans in that variant
        assert getattr(inferred, field) == getattr(config, field), field


def test_official_presets_infer_back():
    for preset in ("official", "official-tiny"):
        config = infer_config(create_model(preset).state_dict())
        assert (config.dims, config.depths, config.depths_decoder) == (
            get_preset(preset).dims, get_preset(preset).depths, get_preset(preset).depths_decoder
        )


def test_safetensors_round_trip_keeps_config_and_outputs(tmp_path):
    torch.manual_seed(1)
    model = create_model("micro").eval()
    path = save_weights(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert loaded.config == model.config
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded(x, x), model(x, x))


def test_authors_pth_loads_with_prefixes(tmp_path):
    torch.manual_seed(2)
    model = create_model("micro").eval()
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "official.pth")
    loaded = load_model(tmp_path / "official.pth")
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, x), model(x, x))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"x": _Evil()}, handle)
    with pytest.raises(WeightsFormatError, match="refused"):
        load_model(path)


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsNotFoundError, match="unknown weights name"):
        load_model("no-such-name")


def test_wrong_architecture_is_a_clear_error(tmp_path):
    torch.save({"patch_embed1.proj.weight": torch.zeros(8, 1, 4, 4), "layers.0.blocks.0.norm.weight": torch.zeros(8)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsFormatError, match="does not fit"):
        load_model(tmp_path / "bad.pth")


def test_output_skip_variants_add_what_they_say():
    torch.manual_seed(0)
    x1, x2 = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    base = create_model("micro").eval()
    with torch.no_grad():  # as the variants below: the same (fused CPU kernel) path for the head
        head = base.forward_padded(x1, x2)
    variants = {"authors": head + 2 * x1 + 2 * x2, "max": head + torch.maximum(x1, x2), "none": head}
    for skip, expected in variants.items():
        model = FusionMamba(replace(base.config, output_skip=skip)).eval()
        model.load_state_dict(base.state_dict())  # the skip has no parameters
        with torch.no_grad():
            torch.testing.assert_close(model(x1, x2), expected.detach(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="output_skip"):
        FusionMambaConfig(output_skip="mean")


def test_max_skip_starts_as_the_max_rule_and_still_learns():
    model = create_model("compact-max")
    x1, x2 = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    out = model(x1, x2)
    assert torch.equal(out, torch.maximum(x1, x2))  # zero-initialised head
    (out - 0.5).square().mean().backward()
    assert model.final_conv.weight.grad.abs().max() > 0  # the head gets a gradient at step 0


def test_files_without_output_skip_load_as_the_authors_head(tmp_path):
    from safetensors.torch import load_file, save_file

    model = create_model("micro")
    save_weights(model, tmp_path / "w.safetensors")
    config = json.loads(FusionMambaConfig.to_json(model.config))
    config.pop("output_skip")  # as written before the field existed
    save_file(load_file(tmp_path / "w.safetensors"), tmp_path / "old.safetensors", metadata={CONFIG_KEY: json.dumps(config)})
    assert load_model(tmp_path / "old.safetensors").config.output_skip == "authors"
    skipped = create_model("compact-max")
    save_weights(skipped, tmp_path / "max.safetensors")
    assert load_model(tmp_path / "max.safetensors").config.output_skip == "max"

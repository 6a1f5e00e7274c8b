"""`convert-weights`: the authors' `.pth` state dicts to our safetensors, safely, with or without a preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from fusionmamba_cli import create_model, load_model
from fusionmamba_cli.checkpoints import infer_config, read_checkpoint
from fusionmamba_cli.checkpoints.convert import check_state_dict, convert_checkpoint, expected_shapes
from fusionmamba_cli.cli.app import app
from fusionmamba_cli.cli.common import UsageError
from fusionmamba_cli.errors import WeightsFormatError
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig, get_preset

SHAPES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_state_dict_shapes.json"
runner = CliRunner()


def _authors_pth(path: Path, model: FusionMamba, *, wrap: bool = False, extra: dict | None = None) -> Path:
    """A `.pth` as the authors' training code writes it: `torch.save` of the state dict (official keys)."""
    state = {**model.state_dict(), **(extra or {})}
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}} if wrap else state, path)
    return path


def _same_outputs(a: FusionMamba, b: FusionMamba) -> bool:
    x1, x2 = torch.rand(1, 1, 20, 28), torch.rand(1, 1, 20, 28)
    with torch.no_grad():
        return torch.equal(a.eval()(x1, x2), b.eval()(x1, x2))


def test_cli_converts_an_official_state_dict(tmp_path):
    torch.manual_seed(0)
    model = create_model("micro")
    src = _authors_pth(tmp_path / "official.pth", model)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["convert-weights", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "dims=[8, 16]" in result.stdout
    with safe_open(str(out), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    assert not any(k.endswith("base_mask") for k in keys)  # constant buffers dropped
    assert keys == {k for k in model.state_dict() if not k.endswith("base_mask")}
    config = FusionMambaConfig.from_json(metadata["config"])
    assert (config.dims, config.depths, config.depths_decoder, config.d_state) == ((8, 16), (1, 1), (1, 1), 4)
    assert metadata["source"] == "official.pth"
    assert _same_outputs(load_model(out), model)


def test_preset_is_checked_and_a_mismatch_lists_the_keys(tmp_path):
    torch.manual_seed(1)
    model = create_model("micro")
    src = _authors_pth(tmp_path / "official.pth", model, wrap=True)
    assert convert_checkpoint(src, tmp_path / "ok.safetensors", preset="micro") == get_preset("micro")
    assert read_checkpoint(tmp_path / "ok.safetensors")[2]["preset"] == "micro"

    result = runner.invoke(app, ["convert-weights", str(src), "-o", str(tmp_path / "bad.safetensors"), "--preset", "official-tiny"])
    assert result.exit_code == 1
    message = str(result.exception)
    assert isinstance(result.exception, WeightsFormatError)
    assert "does not match preset 'official-tiny'" in message
    assert "missing keys (layers.0.blocks.1." in message and "shape mismatches (patch_embed1.proj.weight (8, 1, 4, 4) vs (96, 1, 4, 4)" in message
    assert "without --preset the config is inferred (dims=[8, 16]" in message
    assert not (tmp_path / "bad.safetensors").exists()


def test_any_config_of_the_architecture_is_inferred(tmp_path):
    torch.manual_seed(2)
    config = FusionMambaConfig(dims=(12, 24, 48), depths=(1, 2, 1), depths_decoder=(2, 1, 1), d_state=6, dvss_d_state=16, drop_path_rate=0.0)
    model = FusionMamba(config)
    src = _authors_pth(tmp_path / "odd.pth", model, extra={"layers.0.total_ops": torch.zeros(1), "total_params": torch.zeros(1)})
    assert convert_checkpoint(src, tmp_path / "odd.safetensors") == config
    assert _same_outputs(load_model(tmp_path / "odd.safetensors"), model)


def test_half_precision_checkpoint_stays_half(tmp_path):
    torch.manual_seed(3)
    model = create_model("micro").half()
    src = _authors_pth(tmp_path / "half.pth", model)
    convert_checkpoint(src, tmp_path / "half.safetensors")
    state, _, _ = read_checkpoint(tmp_path / "half.safetensors")
    assert {v.dtype for v in state.values()} == {torch.float16}


class TrainingArgs:
    """A custom object the authors' code might have pickled next to the weights."""

    def __init__(self) -> None:
        self.lr = 1e-4


class Payload:
    """Unpickling this runs code (creates a file): exactly what weights_only=True must never do."""

    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["custom-class", "code-execution"])
def test_pickled_custom_objects_are_refused(tmp_path, kind):
    state = create_model("micro").state_dict()
    obj = TrainingArgs()
    if kind == "code-execution":
        obj = Payload()
        obj.marker = tmp_path / "pwned"
    torch.save({"state_dict": state, "args": obj}, tmp_path / "pickled.pth")
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["convert-weights", str(tmp_path / "pickled.pth"), "-o", str(out)])
    assert result.exit_code == 1
    assert isinstance(result.exception, WeightsFormatError)
    assert "refused" in str(result.exception) and "code execution" in str(result.exception)
    assert not out.exists() and not (tmp_path / "pwned").exists()
    with pytest.raises(WeightsFormatError, match="refused"):
        convert_checkpoint(tmp_path / "pickled.pth", out, preset="micro")


def test_usage_errors(tmp_path):
    src = _authors_pth(tmp_path / "m.pth", create_model("micro"))
    (tmp_path / "exists.safetensors").write_bytes(b"x")
    assert isinstance(runner.invoke(app, ["convert-weights", str(src), "-o", str(tmp_path / "exists.safetensors")]).exception, UsageError)
    assert runner.invoke(app, ["convert-weights", str(src), "-o", str(tmp_path / "exists.safetensors"), "--overwrite"]).exit_code == 0
    with pytest.raises(WeightsFormatError, match=".safetensors"):
        convert_checkpoint(src, tmp_path / "out.pth")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(WeightsFormatError, match="missing keys .*unexpected keys \\(foo\\)"):
        convert_checkpoint(tmp_path / "foreign.pth", tmp_path / "f.safetensors", preset="micro")
    with pytest.raises(WeightsFormatError, match="not a FusionMamba state dict"):
        convert_checkpoint(tmp_path / "foreign.pth", tmp_path / "f.safetensors")


@pytest.fixture(scope="module")
def official_shapes() -> dict:
    if not SHAPES.is_file():
        pytest.skip(f"{SHAPES} not available")
    return json.loads(SHAPES.read_text())


@pytest.mark.parametrize(("variant", "preset"), [("tiny", "official-tiny"), ("default", "official")])
def test_authors_official_checkpoints_match_their_presets(official_shapes, variant, preset):
    """The authors' recorded key/shape lists (their README's tiny CT-MRI model and the default) without
    allocating the ~0.6-0.9 GB of weights: meta tensors go through the same checks as a real conversion."""
    state = {t["key"]: torch.empty(t["shape"], device="meta") for t in official_shapes[variant]["tensors"]}
    assert expected_shapes(get_preset(preset)) == {k: tuple(v.shape) for k, v in state.items()}
    check_state_dict(state, get_preset(preset))
    inferred = infer_config(state)
    wanted = get_preset(preset)
    assert (inferred.dims, inferred.depths, inferred.depths_decoder, inferred.d_state, inferred.block, inferred.fusion) == (
        wanted.dims, wanted.depths, wanted.depths_decoder, wanted.d_state, wanted.block, wanted.fusion
    )
    other = "official" if preset == "official-tiny" else "official-tiny"
    with pytest.raises(WeightsFormatError, match="missing keys|unexpected keys"):
        check_state_dict(state, get_preset(other))

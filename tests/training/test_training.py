"""Training: losses, exact resume, fine-tuning start, data sampling, and 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionmamba_cli.training.data import batch_indices, load_pairs, make_batch, pack_splits
from fusionmamba_cli.training.losses import LossWeights, fusion_loss, ssim
from fusionmamba_cli.model.two_scale import TASK_RULES
from fusionmamba_cli.training.trainer import TrainConfig, TrainingError, learning_rate, train
from tests.conftest import REPO, smooth_image


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A ct_mri train split of four 48x40 pairs and a gfp_pc one of two (GFP in colour)."""
    root = tmp_path_factory.mktemp("data")
    for i in range(4):
        for modality, seed in (("ct", i), ("mri", 50 + i)):
            folder = root / "ct_mri/train" / modality
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((smooth_image(48, 40, seed) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    for i in range(2):
        (root / "gfp_pc/train/gfp").mkdir(parents=True, exist_ok=True)
        (root / "gfp_pc/train/pc").mkdir(parents=True, exist_ok=True)
        Image.fromarray((smooth_image(40, 40, 90 + i, channels=3) * 255).astype(np.uint8)).save(root / f"gfp_pc/train/gfp/g{i}.png")
        Image.fromarray((smooth_image(40, 40, 95 + i) * 255).astype(np.uint8)).save(root / f"gfp_pc/train/pc/g{i}.png")
    return root


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), tasks=["ct_mri"], out=str(out), preset="micro", steps=6, batch_size=2, crop=32, log_every=1, save_every=3, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_loss_terms_and_ablation_switches():
    x = torch.rand(2, 1, 24, 24)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    total, terms = fusion_loss(torch.maximum(x, x.flip(0)), x, x.flip(0), LossWeights(1, 1, 1))
    assert terms["int"] == pytest.approx(0.0, abs=1e-7) and set(terms) == {"int", "text", "ssim"}
    _, only_text = fusion_loss(x, x, x, LossWeights(0, 1, 0))
    assert set(only_text) == {"text"}
    assert LossWeights.parse("paper") == LossWeights(1, 1, 10)
    with pytest.raises(ValueError):
        LossWeights.parse("1,2")


def test_intensity_norm_l1_or_l2():
    fused, a, b = torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.3)
    _, l1 = fusion_loss(fused, a, b, LossWeights(1, 0, 0), "l1")
    _, l2 = fusion_loss(fused, a, b, LossWeights(1, 0, 0), "l2")
    assert l1["int"].item() == pytest.approx(0.2) and l2["int"].item() == pytest.approx(0.04)
    with pytest.raises(ValueError, match="l1"):
        fusion_loss(fused, a, b, LossWeights(1, 0, 0), "l3")


def test_l2_intensity_run_records_its_choice(data_root, tmp_path):
    train(_config(data_root, tmp_path / "run", steps=2, intensity_loss="l2"))
    checkpoint = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert checkpoint["train_config"]["intensity_loss"] == "l2"


def test_non_finite_loss_stops_before_a_checkpoint(data_root, tmp_path):
    with pytest.raises(Exception, match="non-finite"):
        train(_config(data_root, tmp_path / "run", steps=4, lr=1e30, log_every=2, save_every=2))
    assert not (tmp_path / "run/last.pt").exists() or torch.isfinite(
        torch.cat([t.flatten().float() for t in torch.load(tmp_path / "run/last.pt", weights_only=True)["model"].values()])
    ).all()


def test_compiled_training_matches_eager(data_root, tmp_path, monkeypatch):
    # Dynamo + AOTAutograd without code generation ("aot_eager"): the --compile path of the trainer,
    # forward and backward, at CI cost; numerics must match the plain run closely.
    monkeypatch.setattr("fusionmamba_cli.model.compiled.DEVICE_TYPES", ("cuda", "cpu"))  # CPU-only CI
    real_compile, calls = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(1) or real_compile(model, backend="aot_eager", dynamic=False))
    plain = train(_config(data_root, tmp_path / "plain", steps=3))
    assert calls == []
    compiled = train(_config(data_root, tmp_path / "compiled", steps=3, compile=True))
    assert [loss for _, loss in _losses(tmp_path / "compiled")] == pytest.approx([loss for _, loss in _losses(tmp_path / "plain")], rel=1e-4)
    assert compiled["step"] == plain["step"] == 3 and calls == [1]


def test_compiled_backward_failure_falls_back_to_eager(data_root, tmp_path, monkeypatch):
    class FailingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("inductor: backward failed to compile")

    monkeypatch.setattr("fusionmamba_cli.model.compiled.DEVICE_TYPES", ("cuda", "cpu"))  # CPU-only CI
    monkeypatch.setattr(torch, "compile", lambda model, **kw: lambda a, b: FailingBackward.apply(model(a, b)))
    with pytest.warns(RuntimeWarning, match="backward failed to compile"):
        fallback = train(_config(data_root, tmp_path / "fallback", steps=3, compile=True))
    plain = train(_config(data_root, tmp_path / "plain", steps=3))
    assert _losses(tmp_path / "fallback") == _losses(tmp_path / "plain")
    assert fallback["weights_digest"] == plain["weights_digest"]


def test_resume_continues_exactly(data_root, tmp_path):
    straight = train(_config(data_root, tmp_path / "straight"))
    train(_config(data_root, tmp_path / "split", steps=3))
    resumed = train(_config(data_root, tmp_path / "split"), resume=True)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
    assert straight["weights_digest"] == resumed["weights_digest"]


def test_refuses_to_clobber_an_existing_run(data_root, tmp_path):
    train(_config(data_root, tmp_path / "run", steps=2))
    with pytest.raises(Exception, match="--resume"):
        train(_config(data_root, tmp_path / "run", steps=4))


def test_init_starts_from_given_weights_and_writes_final(data_root, tmp_path, micro_weights):
    result = train(_config(data_root, tmp_path / "ft", steps=2, init=str(micro_weights), tasks=["gfp_pc"]))
    assert result["step"] == 2 and (tmp_path / "ft/final.safetensors").is_file()


def test_cosine_schedule_and_warmup():
    config = TrainConfig(data="", tasks=[], out="", lr=1e-3, steps=100, lr_schedule="cosine", warmup_steps=10)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 10) == pytest.approx(1e-3)
    assert learning_rate(config, 99) < 2e-5


@pytest.mark.parametrize("encoding", ["png", "webp"])
def test_packed_data_matches_folder_data(data_root, tmp_path, encoding):
    pack_splits(data_root, ["ct_mri", "gfp_pc"], "train", tmp_path / "pack.npz", encoding=encoding)
    folder = load_pairs(data_root, ["ct_mri", "gfp_pc"], "train")
    packed = load_pairs(tmp_path / "pack.npz", ["ct_mri", "gfp_pc"], "train")
    assert sorted(folder.names) == sorted(packed.names)
    for attr in ("x1", "x2"):
        a = dict(zip(folder.names, getattr(folder, attr)))
        b = dict(zip(packed.names, getattr(packed, attr)))
        assert all(b[name].ndim == 2 and np.array_equal(a[name], b[name]) for name in a)


def test_pack_rejects_unknown_encoding(data_root, tmp_path):
    with pytest.raises(ValueError, match="encoding"):
        pack_splits(data_root, ["ct_mri"], "train", tmp_path / "pack.npz", encoding="jpeg")


def test_batches_depend_only_on_the_step_and_shard_by_rank(data_root):
    pairs = load_pairs(data_root, ["ct_mri"], "train")
    one = make_batch(pairs, 5, 2, 32, seed=1)
    again = make_batch(pairs, 5, 2, 32, seed=1)
    assert torch.equal(one[0], again[0]) and one[0].shape == (2, 1, 32, 32)
    whole = batch_indices(3, 2, 4, seed=0, rank=0, world=1)
    ranks = [batch_indices(3, 1, 4, seed=0, rank=r, world=2) for r in range(2)]
    assert sorted(np.concatenate(ranks)) == sorted(whole)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_logs(log_dir: Path) -> str:
    """Every rank's stderr as torchrun's --redirects saved it (its own error, which the launcher's
    summary leaves out)."""
    return "\n".join(f"--- {f.relative_to(log_dir)}:\n{f.read_text()[-1500:]}"
                     for f in sorted(log_dir.rglob("stderr.log")) if f.stat().st_size)


def _run_two_ranks(data_root: Path, out: Path, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "--log-dir", str(log_dir), "--redirects", "3",
           "-m", "fusionmamba_cli", "train", "--task", "ct_mri", "--data", str(data_root),
           "--out", str(out), "--preset", "micro", "--steps", "3", "--batch-size", "1", "--crop", "32", "--device", "cpu", "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=240)


def test_two_process_ddp_ranks_end_identical(data_root, tmp_path):
    out = tmp_path / "ddp"
    proc = _run_two_ranks(data_root, out, tmp_path / "logs1")
    if proc.returncode != 0 and "Signal 6 (SIGABRT)" in proc.stderr:
        # One full CI run (2026-11-27) had a rank abort at startup (SIGABRT, no Python error in the
        # launcher's summary); never when the test ran alone (9 runs). Run again once, and show the first attempt's rank logs either way.
        warnings.warn(f"DDP test: a rank aborted; running it again. Rank logs:\n{_rank_logs(tmp_path / 'logs1')}")
        shutil.rmtree(out, ignore_errors=True)
        proc = _run_two_ranks(data_root, out, tmp_path / "logs2")
    assert proc.returncode == 0, f"{proc.stderr[-1500:]}\n{_rank_logs(tmp_path / 'logs2' if (tmp_path / 'logs2').exists() else tmp_path / 'logs1')}"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    digests = next(r["rank_weight_digests"] for r in records if "rank_weight_digests" in r)
    assert len(digests) == 2 and digests[0] == digests[1]
    assert (out / "final.safetensors").is_file()


def test_holdout_validation_scores_pairs_carved_from_train(data_root, tmp_path):
    train(_config(data_root, tmp_path / "run", steps=2, holdout_every=2, val_split="holdout", val_every=2, preset="micro"))
    records = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert any(r.get("val_split") == "holdout" and "VIF" in r for r in records)
    with pytest.raises(Exception, match="--holdout"):
        train(_config(data_root, tmp_path / "run2", steps=1, val_split="holdout"))


def test_each_loss_name_trains_and_is_recorded(data_root, tmp_path):
    for name in ("paper", "authors"):
        train(_config(data_root, tmp_path / name, steps=1, loss=name))
        assert torch.load(tmp_path / name / "last.pt", weights_only=True)["train_config"]["loss"] == name


def _train_cli(capsys, data: Path, out: Path, *args):
    from tests.cli.helpers import run_cli

    return run_cli(capsys, "train", "--task", "ct_mri", "--data", data, "--out", out, "--preset", "micro",
                   "--batch-size", "2", "--crop", "32", "--device", "cpu", *args)


def test_run_folder_errors_are_usage_errors_and_draw_no_bar(data_root, tmp_path, capsys, monkeypatch):
    """Nothing to --resume, or a run already in --out: exit 2, one line, and no 0/N bar first."""
    from io import StringIO

    from rich.console import Console

    from fusionmamba_cli.cli import train as train_cli

    terminal = StringIO()
    monkeypatch.setattr(train_cli, "console", Console(file=terminal, force_terminal=True, width=100))
    missing = _train_cli(capsys, data_root, tmp_path / "empty", "--steps", "2", "--resume")
    assert missing.code == 2 and missing.error_lines == [f"error: {tmp_path / 'empty' / 'last.pt'}: no checkpoint to resume from"]
    train(_config(data_root, tmp_path / "run", steps=2))
    clobber = _train_cli(capsys, data_root, tmp_path / "run", "--steps", "4")
    assert clobber.code == 2 and len(clobber.error_lines) == 1 and "--resume" in clobber.error_lines[0]
    assert "training" not in terminal.getvalue() and "0/" not in terminal.getvalue()


def test_run_folder_is_checked_before_the_data_is_read(data_root, tmp_path, monkeypatch):
    from fusionmamba_cli.training import trainer

    def unreachable(*args, **kwargs):
        raise AssertionError("data read before the run folder was checked")

    monkeypatch.setattr(trainer, "load_pairs", unreachable)
    with pytest.raises(trainer.RunFolderError, match="no checkpoint"):
        train(_config(data_root, tmp_path / "empty"), resume=True)


def test_resuming_a_finished_run_says_so(data_root, tmp_path, capsys):
    train(_config(data_root, tmp_path / "run", steps=2))
    final = (tmp_path / "run/final.safetensors").read_bytes()
    result = _train_cli(capsys, data_root, tmp_path / "run", "--steps", "2", "--resume")
    assert result.code == 0, result.err
    assert "already finished at step 2 of 2" in result.err and "done:" not in result.err
    assert (tmp_path / "run/final.safetensors").read_bytes() == final


def test_a_one_task_two_scale_model_starts_as_that_tasks_rule(data_root, tmp_path):
    from fusionmamba_cli.checkpoints.files import load_model

    skip = {"output_skip": "two_scale"}
    train(_config(data_root, tmp_path / "one", steps=1, preset_overrides=skip))
    assert load_model(tmp_path / "one/final.safetensors", device="cpu").two_scale_params == TASK_RULES["ct_mri"]
    train(_config(data_root, tmp_path / "pooled", steps=1, tasks=["ct_mri", "gfp_pc"], preset_overrides=skip))
    pooled = load_model(tmp_path / "pooled/final.safetensors", device="cpu").two_scale_params
    assert pooled != TASK_RULES["ct_mri"] and pooled != TASK_RULES["gfp_pc"]  # the preset's own rule


def test_head_init_lets_gradients_reach_the_network_behind_the_head(data_root, tmp_path):
    """A zero last conv passes no gradient upstream; --head-init draws it off zero so training can move the head."""
    from fusionmamba_cli.training.trainer import _build

    def upstream_grad(head_init: float) -> float:
        model = _build(_config(data_root, tmp_path, preset_overrides={"output_skip": "two_scale"}, head_init=head_init))
        a, b = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
        model(a, b).square().mean().backward()
        return sum(float(p.grad.abs().sum()) for n, p in model.named_parameters() if p.grad is not None and "final_conv" not in n)

    assert upstream_grad(0.0) == 0.0
    assert upstream_grad(0.01) > 0.0


def test_head_init_also_applies_when_fine_tuning_from_init(data_root, tmp_path):
    """--init of a model whose head is zero plus --head-init: the head is redrawn, the rest is kept."""
    from fusionmamba_cli.checkpoints.files import load_model, save_weights
    from fusionmamba_cli.training.trainer import _build

    train(_config(data_root, tmp_path / "base", steps=1, preset_overrides={"output_skip": "two_scale"}))
    base = load_model(tmp_path / "base/final.safetensors", device="cpu")
    torch.nn.init.zeros_(base.final_conv.weight)
    save_weights(base, tmp_path / "zero-head.safetensors")
    kept = _build(_config(data_root, tmp_path, init=str(tmp_path / "zero-head.safetensors")))
    redrawn = _build(_config(data_root, tmp_path, init=str(tmp_path / "zero-head.safetensors"), head_init=0.01))
    assert float(kept.final_conv.weight.abs().max()) == 0.0
    assert float(redrawn.final_conv.weight.abs().max()) > 0.0
    other = [n for n, _ in base.named_parameters() if "final_conv" not in n]
    assert all(torch.equal(dict(redrawn.named_parameters())[n], dict(base.named_parameters())[n]) for n in other)


def test_refine_only_trains_the_refinement_head_and_leaves_the_rest(data_root, tmp_path):
    from fusionmamba_cli.checkpoints.files import load_model
    from fusionmamba_cli.training.trainer import _build

    refine = {"output_skip": "two_scale", "refine_width": 4, "refine_depth": 2}
    before = _build(_config(data_root, tmp_path, preset_overrides=refine)).state_dict()
    train(_config(data_root, tmp_path / "r", steps=2, preset_overrides=refine, refine_only=True, qabf_weight=1.0))
    after = load_model(tmp_path / "r/final.safetensors", device="cpu").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("refine.") for k in changed)


def test_refine_only_without_a_refinement_head_is_a_clear_error(data_root, tmp_path):
    with pytest.raises(TrainingError, match="refinement head"):
        train(_config(data_root, tmp_path, steps=1, refine_only=True))


def test_refine_width_with_init_adds_a_head_and_keeps_every_weight_of_the_file(data_root, tmp_path):
    """--init a model without a refinement head plus --refine-width: the file's weights load
    unchanged, the new head exists (near zero), so the model starts fusing as the file did."""
    from fusionmamba_cli.checkpoints.files import load_model
    from fusionmamba_cli.training.trainer import _build

    train(_config(data_root, tmp_path / "base", steps=1, preset_overrides={"output_skip": "two_scale"}))
    base = load_model(tmp_path / "base/final.safetensors", device="cpu")
    grown = _build(_config(data_root, tmp_path, init=str(tmp_path / "base/final.safetensors"), refine_width=4, refine_depth=2))
    assert grown.refine is not None and grown.config.refine_width == 4 and grown.config.refine_depth == 2
    grown_state = grown.state_dict()
    assert all(torch.equal(grown_state[k], v) for k, v in base.state_dict().items())
    x1, x2 = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert float((grown.eval()(x1, x2) - base(x1, x2)).abs().max()) < 0.05


def test_refine_width_with_init_on_an_authors_skip_model_is_a_clear_error(data_root, tmp_path):
    train(_config(data_root, tmp_path / "base", steps=1))  # the authors' head: nothing to refine
    with pytest.raises(TrainingError, match="refinement head"):
        train(_config(data_root, tmp_path / "r", steps=1, init=str(tmp_path / "base/final.safetensors"), refine_width=4))


def test_refine_depth_with_init_but_no_width_is_a_usage_error(data_root, tmp_path, capsys):
    result = _train_cli(capsys, data_root, tmp_path / "r", "--steps", "1", "--init", "compact-ct_mri", "--refine-depth", "3")
    assert result.code == 2 and result.error_lines == ["error: --refine-depth with --init needs --refine-width (the head to add)"]

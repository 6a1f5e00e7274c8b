"""The training loop: Adam on the fusion loss, bf16 autocast on GPU, atomic checkpoints, exact
resume (model, optimiser, step, RNG; batches are a function of the step), fine-tuning from
existing weights, per-interval validation metrics, DistributedDataParallel under torchrun.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from fusionmamba_cli import distributed
from fusionmamba_cli.checkpoints.files import build_model, read_checkpoint, save_weights
from fusionmamba_cli.atomic import write_bytes_atomic
from fusionmamba_cli.checkpoints.resolve import resolve_weights
from fusionmamba_cli.devices import pick_device
from fusionmamba_cli.errors import FusionMambaError, InvalidRequestError, is_out_of_memory
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig, get_preset
from fusionmamba_cli.model.compiled import CompiledForward
from fusionmamba_cli.model.two_scale import TASK_RULES, config_fields
from fusionmamba_cli.training.data import HOLDOUT_SPLIT, PairSet, load_pairs, make_batch, split_holdout
from fusionmamba_cli.training.losses import LossWeights, Objective

CHECKPOINT_NAME = "last.pt"
FINAL_NAME = "final.safetensors"
LOG_NAME = "log.jsonl"
VAL_METRICS = ("VIF", "Qabf", "SF", "SSIM", "SCD")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in its checkpoints and final weights."""

    data: str
    tasks: list[str]
    out: str
    preset: str = "compact"
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    crop: int = 128
    loss: str = "two-scale"
    loss_weights: str = "1,1,10"
    intensity_loss: str = "l2"
    vif_weight: float = 0.0
    qabf_weight: float = 0.0
    anchor: str = "l1"
    target_sigma: float | None = None
    target_gain: float | None = None
    head_init: float = 0.0
    refine_only: bool = False
    refine_width: int | None = None
    refine_depth: int | None = None
    holdout_every: int = 0
    amp: bool = False
    seed: int = 0
    save_every: int = 500
    log_every: int = 10
    val_split: str | None = None
    val_every: int = 500
    val_images: int = 8
    init: str | None = None
    scan_backend: str | None = None
    device: str = "auto"
    preset_overrides: dict = field(default_factory=dict)
    time_limit_min: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    deterministic: bool = False
    compile: bool = False


class TrainingError(FusionMambaError, RuntimeError):
    """A training run that cannot start or continue."""


class RunFolderError(TrainingError, InvalidRequestError):
    """--out in the wrong state for the request: nothing to --resume, or a run there already."""


def _atomic_torch_save(obj: dict, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _join(device_choice: str) -> tuple[_Ranks, torch.device]:
    """Under torchrun, join the group (NCCL on CUDA, gloo on CPU) with this rank's device."""
    device = pick_device(device_choice)
    rank, world, _ = distributed.init_distributed("nccl" if device.type == "cuda" else "gloo")
    return _Ranks(rank, world), device


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate for `step` (0-based): linear warm-up, then constant or cosine decay to 1% of --lr.
    A pure function of the step, so a resumed run follows the same schedule exactly."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return config.lr


def _agree(flag: bool, ddp: _Ranks, device: torch.device) -> bool:
    """True when any rank says so (keeps ranks in lock-step when stopping on a time limit)."""
    if ddp.world <= 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _build(config: TrainConfig) -> FusionMamba:
    torch.manual_seed(config.seed)
    if config.init:
        state, model_config, _ = read_checkpoint(resolve_weights(config.init))
        model = _with_refine_head(state, model_config, config) if config.refine_width else build_model(state, model_config, config.init)
        if config.head_init > 0:  # fine-tuning a rule-skip model whose head stayed at zero
            _start_head_off_zero(model, config.head_init)
        return model
    overrides = _task_rule_fields(config)
    overrides.update(config.preset_overrides)
    if config.refine_width is not None:
        overrides["refine_width"] = config.refine_width
    if config.refine_depth is not None:
        overrides["refine_depth"] = config.refine_depth
    if config.target_sigma:  # a new model's two-scale skip is the rule the loss targets
        overrides["two_scale_sigma"] = config.target_sigma
    if config.target_gain:
        overrides["two_scale_gain"] = config.target_gain
    model = FusionMamba(get_preset(config.preset, **overrides))
    if config.head_init > 0:
        _start_head_off_zero(model, config.head_init)
    return model


def _with_refine_head(state: dict[str, torch.Tensor], model_config: FusionMambaConfig, config: TrainConfig) -> FusionMamba:
    """--init weights plus a new refinement head (--refine-width/--refine-depth): every weight of
    the file is kept, the head starts near zero, so the model starts fusing as the file does."""
    width, depth = config.refine_width, config.refine_depth or model_config.refine_depth
    if model_config.refine_width:
        if (model_config.refine_width, model_config.refine_depth) != (width, depth):
            raise TrainingError(f"--init {config.init}: has a refinement head of width {model_config.refine_width}, "
                                f"depth {model_config.refine_depth}; --refine-width/--refine-depth ask for {width}, {depth}")
        return build_model(state, model_config, config.init)
    try:
        model = FusionMamba(replace(model_config, refine_width=width, refine_depth=depth))
    except ValueError as exc:
        raise TrainingError(f"--init {config.init}: cannot take a refinement head: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not name.startswith("refine.") for name in missing):
        build_model(state, model_config, config.init)  # the file's own mismatch error, where it has one
        raise TrainingError(f"--init {config.init}: its weights do not fit the model with a refinement head")
    return model


def _start_head_off_zero(model: FusionMamba, std: float) -> None:
    """Draw the head's last conv from N(0, std) instead of zeros: a zero 4->1 conv passes no gradient
    upstream, and its own gradient averages out, so a rule-skip model never leaves its rule."""
    torch.nn.init.normal_(model.final_conv.weight, std=std)


def _freeze_all_but_refine(model: FusionMamba) -> None:
    """--refine-only: train the full-resolution refinement head alone; the network behind it runs
    frozen (no autograd graph is built for it, so a step costs little more than its forward)."""
    if model.refine is None:
        raise TrainingError("--refine-only needs a model with a refinement head (e.g. --preset compact-refine)")
    refine = {id(p) for p in model.refine.parameters()}
    for param in model.parameters():
        param.requires_grad_(id(param) in refine)


def _task_rule_fields(config: TrainConfig) -> dict:
    """A one-task two-scale model starts with that task's rule (TASK_RULES); pooled models keep the preset's."""
    if len(config.tasks) != 1 or config.tasks[0] not in TASK_RULES or get_preset(config.preset, **config.preset_overrides).output_skip != "two_scale":
        return {}
    return config_fields(TASK_RULES[config.tasks[0]])


def _objective(config: TrainConfig, model: FusionMamba) -> Objective:
    """The training objective; the two-scale target is the model's own rule (its skip), with
    --target-sigma / --target-gain overriding it (e.g. for --init weights of another rule)."""
    overrides = {"base_sigma": config.target_sigma, "detail_gain": config.target_gain}
    target = replace(model.two_scale_params, **{k: v for k, v in overrides.items() if v})
    return Objective(config.loss, LossWeights.parse(config.loss_weights), config.intensity_loss, target,
                     config.vif_weight, config.anchor, config.qabf_weight)


def _validate(model: FusionMamba, pairs: PairSet, device: torch.device, limit: int) -> dict[str, float]:
    """Mean of a few fusion metrics over the first `limit` validation pairs (full images)."""
    from fusionmamba_cli.metrics import score_triplet

    scores: dict[str, list[float]] = {m: [] for m in VAL_METRICS}
    model.eval()
    with torch.inference_mode():
        for x1, x2 in list(zip(pairs.x1, pairs.x2))[:limit]:
            t1 = torch.from_numpy(x1.astype(np.float32) / 255)[None, None].to(device)
            t2 = torch.from_numpy(x2.astype(np.float32) / 255)[None, None].to(device)
            fused = model(t1, t2).float().clamp(0, 1)[0, 0].cpu().numpy()
            fused_u8 = np.rint(fused * 255).astype(np.uint8)
            for key, value in score_triplet(x2, x1, fused_u8, list(VAL_METRICS)).items():
                if value is not None:
                    scores[key].append(value)
    model.train()
    return {k: float(np.mean(v)) for k, v in scores.items() if v}


def _check_run_folder(checkpoint_path: Path, resume: bool, main: bool) -> None:
    """--resume needs a checkpoint; a fresh run must not clobber one."""
    if resume and not checkpoint_path.is_file():
        raise RunFolderError(f"{checkpoint_path}: no checkpoint to resume from")
    if not resume and main and checkpoint_path.exists():
        raise RunFolderError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --out")


def train(config: TrainConfig, *, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) a training; returns the final log record ({"step", "already_finished": True} when
    a resumed run had already reached `config.steps`). Rank 0 writes everything."""
    if config.deterministic:  # bit-reproducible GPU runs, at some speed cost
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    ddp, device = _join(config.device)
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    _check_run_folder(checkpoint_path, resume, ddp.main)  # before any data is read or work is shown
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
    pairs = load_pairs(Path(config.data), config.tasks, "train")
    pairs, holdout = split_holdout(pairs, config.holdout_every)
    if config.val_split == HOLDOUT_SPLIT:
        if holdout is None:
            raise TrainingError(f"--val {HOLDOUT_SPLIT} needs --holdout N (every N-th training pair held out)")
        val_pairs = holdout
    else:
        val_pairs = load_pairs(Path(config.data), config.tasks, config.val_split) if config.val_split else None

    model = _build(config).to(device).train()
    objective = _objective(config, model)
    model.set_scan_backend(config.scan_backend or None)  # None: the dispatcher's default
    for param in model.unused_parameters():  # never get a gradient; DDP requires them frozen
        param.requires_grad_(False)
    if config.refine_only:
        _freeze_all_but_refine(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    step = 0
    if resume:
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if int(saved["step"]) >= config.steps:  # nothing left to do: say so instead of "training 0/N"
            distributed.cleanup()
            return {"step": int(saved["step"]), "already_finished": True}
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
        _restore_rng(saved["rng"], device)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if ddp.world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda" else torch.autocast("cpu", enabled=False)
    forward = CompiledForward(net, enabled=config.compile)
    compiled_ok = False  # a compiled step has run forward and backward once

    def gradient_step(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss, its terms and fresh gradients for one batch."""
        with autocast:
            fused = forward(x1, x2)
        loss, terms = objective(fused, x1, x2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, terms

    def log(record: dict) -> None:
        if not ddp.main:
            return
        with open(out / LOG_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if on_log is not None:
            on_log(record)

    def save_checkpoint() -> None:
        if ddp.main:
            _atomic_torch_save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "rng": _rng_state(device), "train_config": asdict(config), "model_config": model.config.to_json()},
                checkpoint_path,
            )

    window_start, window_steps = time.perf_counter(), 0
    deadline = time.monotonic() + 60 * config.time_limit_min if config.time_limit_min else None
    record: dict = {}
    # Non-finite losses are caught by a running flag read only when logging or saving: a per-step
    # .item() would stall the GPU queue every step. No checkpoint is written from non-finite weights.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    last_checked = step

    def ensure_finite() -> None:
        nonlocal last_checked
        if bool(nonfinite.item()):
            raise TrainingError(f"the loss became non-finite after step {last_checked} (by step {step}); "
                                "lower --lr or check the data")
        last_checked = step

    while step < config.steps:
        if deadline is not None and _agree(time.monotonic() > deadline, ddp, device):
            ensure_finite()
            log({"step": step, "stopped": "time limit"})
            save_checkpoint()
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        x1, x2 = make_batch(pairs, step, config.batch_size, config.crop, config.seed, ddp.rank, ddp.world)
        x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
        if forward.enabled and not compiled_ok:
            # The compiled backward is built at its first use, outside CompiledForward's own
            # fallback: a failure there also means "train without compiling" (same batch again).
            try:
                loss, terms = gradient_step(x1, x2)
                compiled_ok = True
            except Exception as exc:  # noqa: BLE001
                if is_out_of_memory(exc):
                    raise
                forward.disable(exc)
                loss, terms = gradient_step(x1, x2)
        else:
            loss, terms = gradient_step(x1, x2)
        optimizer.step()
        step += 1
        window_steps += 1
        nonfinite.logical_or_(~torch.isfinite(loss.detach()))
        logging_now = step % config.log_every == 0 or step == config.steps
        saving_now = step % config.save_every == 0 or step == config.steps
        if logging_now or saving_now:
            ensure_finite()
        if logging_now:
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                      "lr": optimizer.param_groups[0]["lr"], "steps_per_s": window_steps / max(elapsed, 1e-9)}
            log(record)
            window_start, window_steps = time.perf_counter(), 0
        if val_pairs is not None and (step % config.val_every == 0 or step == config.steps) and ddp.main:
            log({"step": step, "val_split": config.val_split, **_validate(model, val_pairs, device, config.val_images)})
        if saving_now:
            save_checkpoint()
    digest = weights_digest(model)
    digests = distributed.gather_to_rank0(digest)
    if ddp.world > 1 and ddp.main:
        log({"step": step, "rank_weight_digests": digests})
    if ddp.main:
        metadata = {"train_config": json.dumps(asdict(config)), "steps": str(step)}
        save_weights(model, out / FINAL_NAME, metadata=metadata)
    distributed.barrier()
    distributed.cleanup()
    return {"step": step, "weights_digest": digest, **record}

"""`fusionmamba train`: unsupervised training (single process, or DDP under torchrun)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from fusionmamba_cli.cli.common import (
    DeviceOpt,
    PresetName,
    QuietOpt,
    ScanBackendOpt,
    TaskName,
    UsageError,
    choices,
    console,
)
from fusionmamba_cli.datasets import default_data_root
from fusionmamba_cli.model import list_presets
from fusionmamba_cli.training.data import HOLDOUT_SPLIT
from fusionmamba_cli.training.losses import ANCHOR_NORMS, INTENSITY_NORMS, LOSS_NAMES, LossWeights
from fusionmamba_cli.training.trainer import TrainConfig, train

LossName = choices("LossName", LOSS_NAMES)
AnchorName = choices("AnchorName", ANCHOR_NORMS)


def train_command(
    task: Annotated[list[TaskName], typer.Option("--task", "-t", help="Task(s) to train on; repeat for a joint/general model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints (last.pt), log.jsonl, final.safetensors.")],
    data: Annotated[Path | None, typer.Option("--data", help="Data root (ROOT/<task>/train/<modality>/*.png) or a packed .npz. Default $FUSIONMAMBA_DATA or ./data.")] = None,
    preset: Annotated[PresetName, typer.Option("--preset", metavar="PRESET", help=f"Model preset: {', '.join(list_presets())} (compact-two-scale: the shipped task models' network).")] = PresetName("compact-two-scale"),
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps in total.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", min=0.01, help="Alternative to --steps: passes over the training pairs.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (paper: 1e-4).")] = 1e-4,
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="constant or cosine (decay to 1% of --lr over --steps).")] = "constant",
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Linear warm-up steps.")] = 0,
    crop: Annotated[int, typer.Option("--crop", min=16, help="Random crop size.")] = 128,
    loss: Annotated[LossName, typer.Option("--loss", help=f"Objective: {', '.join(LOSS_NAMES)} (docs/training.md).")] = LossName("two-scale"),
    vif_weight: Annotated[float, typer.Option("--vif-weight", min=0.0, help="two-scale: weight of the differentiable VIF reward.")] = 0.0,
    qabf_weight: Annotated[float, typer.Option("--qabf-weight", min=0.0, help="two-scale: weight of the differentiable Qabf reward (edge strength and orientation kept from the sources).")] = 0.0,
    anchor: Annotated[AnchorName, typer.Option("--anchor", help="two-scale: norm of the pull towards the rule, l1 or l2 (smooth; lets --vif-weight move the output).")] = AnchorName("l1"),
    target_sigma: Annotated[float | None, typer.Option("--target-sigma", min=0.1, help="two-scale: base blur sigma of the rule (default: the model's).")] = None,
    target_gain: Annotated[float | None, typer.Option("--target-gain", min=0.1, help="two-scale: detail gain of the rule (default: the model's).")] = None,
    refine_only: Annotated[bool, typer.Option("--refine-only", help="Train only the refinement head (compact-refine); the network behind it stays as it is.")] = False,
    refine_width: Annotated[int | None, typer.Option("--refine-width", min=1, help="Channels of the full-resolution refinement head; with --init, adds one to those weights (e.g. a shipped model).")] = None,
    refine_depth: Annotated[int | None, typer.Option("--refine-depth", min=1, help="3x3 convolutions of the refinement head (default 4; compact-refine: 5).")] = None,
    head_init: Annotated[float, typer.Option("--head-init", min=0.0, help="Std of the head's last conv at the start (rule-skip presets start it at 0, which passes no gradient upstream).")] = 0.0,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help=f"Hold every N-th training pair out (per task) as the '{HOLDOUT_SPLIT}' validation split.")] = 0,
    loss_weights: Annotated[str, typer.Option("--loss-weights", help="paper loss: int,text,ssim weights, or 'paper' (1,1,10) / 'code' (10,10,1). 0 switches a term off.")] = "paper",
    intensity_loss: Annotated[str, typer.Option("--intensity-loss", help="paper loss: norm of the intensity term, l2 (the paper's Eq. 11) or l1.")] = "l2",
    amp: Annotated[bool, typer.Option("--amp", help="bf16 autocast on GPU.")] = False,
    compiled: Annotated[bool, typer.Option("--compile", help="Train through torch.compile (fewer, fused kernels; compiles for minutes first; falls back to eager with a warning).")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="Checkpoint every N steps (and at the end).")] = 500,
    log_every: Annotated[int, typer.Option("--log-every", min=1)] = 10,
    val: Annotated[str | None, typer.Option("--val", help=f"Split scored with a few metrics every --val-every steps ('{HOLDOUT_SPLIT}' with --holdout).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", min=1)] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    init: Annotated[str | None, typer.Option("--init", help="Start from these weights, a name or a file (fine-tuning).")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", min=0.01, help="Stop (with a checkpoint) after this many minutes; --resume continues.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic GPU kernels (slower), for bit-reproducible runs.")] = False,
    device: DeviceOpt = "auto",
    scan_backend: ScanBackendOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train FusionMamba without labels (default objective: the two-scale rule as anchor, see --loss)."""
    if lr_schedule not in ("constant", "cosine"):
        raise UsageError(f"--lr-schedule {lr_schedule!r}: choose constant or cosine")
    if val == HOLDOUT_SPLIT and not holdout:
        raise UsageError(f"--val {HOLDOUT_SPLIT} needs --holdout N")
    if refine_depth is not None and refine_width is None and init:
        raise UsageError("--refine-depth with --init needs --refine-width (the head to add)")
    if intensity_loss not in INTENSITY_NORMS:
        raise UsageError(f"--intensity-loss {intensity_loss!r}: choose {' or '.join(INTENSITY_NORMS)}")
    try:
        weights = LossWeights.parse(loss_weights)
    except ValueError as exc:
        raise UsageError(f"--loss-weights: {exc}") from None
    data = data or default_data_root()
    tasks = [t.value for t in task]
    if steps is None:
        if epochs is None:
            raise UsageError("give --steps or --epochs")
        from fusionmamba_cli.training.data import load_pairs

        steps = max(1, round(epochs * len(load_pairs(data, tasks, "train")) / batch_size))
    config = TrainConfig(
        data=str(data), tasks=tasks, out=str(out), preset=preset.value, steps=steps, batch_size=batch_size, lr=lr,
        crop=crop, loss=loss.value, vif_weight=vif_weight, qabf_weight=qabf_weight, anchor=anchor.value, target_sigma=target_sigma, target_gain=target_gain, head_init=head_init, refine_only=refine_only,
        refine_width=refine_width, refine_depth=refine_depth,
        holdout_every=holdout, loss_weights=",".join(str(w) for w in (weights.intensity, weights.texture, weights.ssim)),
        intensity_loss=intensity_loss, amp=amp, compile=compiled, seed=seed, save_every=save_every, log_every=log_every, val_split=val, val_every=val_every,
        init=init, scan_backend=scan_backend.value if scan_backend else None, device=device,
        time_limit_min=time_limit, lr_schedule=lr_schedule, warmup_steps=warmup, deterministic=deterministic,
    )
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if quiet or not main_rank:
        train(config, resume=resume)
        return
    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    progress = Progress(*columns, console=console)
    bars: list = []  # the bar appears with the first log record, so an error at start draws none

    def on_log(record: dict) -> None:
        if not bars:
            progress.start()
            bars.append(progress.add_task("train", total=steps, status=""))
        if "loss" in record:
            progress.update(bars[0], completed=record["step"], status=f"loss {record['loss']:.4f}  {record['steps_per_s']:.1f} steps/s")
        elif "val_split" in record:
            shown = {k: round(v, 4) for k, v in record.items() if k not in ("step", "val_split")}
            progress.console.print(f"step {record['step']} {record['val_split']}: {json.dumps(shown)}")

    try:
        result = train(config, resume=resume, on_log=on_log)
    finally:
        progress.stop()
    if result.get("already_finished"):
        console.print(f"{escape(str(out))}: already finished at step {result['step']} of {steps}; nothing to do (raise --steps to train further)")
        return
    console.print(f"done: {result['step']} steps; weights in {escape(str(out / 'final.safetensors'))}")

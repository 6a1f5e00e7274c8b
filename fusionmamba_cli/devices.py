"""The one rule that turns a device choice (`auto`, `cpu`, `cuda`, `cuda:N`) into a torch device,
for fuse, evaluate, benchmark and train alike, one process or one of several under torchrun."""

from __future__ import annotations

import torch

from fusionmamba_cli import distributed
from fusionmamba_cli.errors import InvalidRequestError


class DeviceError(InvalidRequestError, ValueError):
    """A device choice that is not a device, or not present on this machine."""


def pick_device(choice: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """`auto` -> CUDA when present, else the CPU; an explicit choice is checked against the machine.

    Under a launcher (WORLD_SIZE > 1) `auto` and a bare `cuda` mean this process's GPU,
    `cuda:LOCAL_RANK` (`local_rank` overrides the environment's); an explicit `cuda:N` is kept.
    """
    text = choice.strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"--device {choice!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"--device {choice!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {choice}: CUDA is not available on this machine")
    _, world, env_local_rank = distributed.env_ranks()
    if device.index is None and world > 1:
        device = torch.device("cuda", env_local_rank if local_rank is None else local_rank)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {choice}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device

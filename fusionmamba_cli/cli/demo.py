"""`fusionmamba demo`: fuse a synthetic IR/visible pair, to see the tool work with no images of your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fusionmamba_cli.checkpoints import default_weights_for, load_model
from fusionmamba_cli.cli.common import DeviceOpt, WeightsOpt, console, resolve_device
from fusionmamba_cli.fusion.pipeline import Fuser
from fusionmamba_cli.imaging.io import LoadedImage, write_image


def synthetic_pair(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An 'infrared' image (warm blobs on a dark scene) and a 'visible' one (textured, edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    ir = 0.15 + 0.05 * rng.standard_normal((size, size))
    for cy, cx, r in ((0.35, 0.3, 0.08), (0.6, 0.7, 0.12)):
        ir += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    vis = 0.5 + 0.25 * np.sin(24 * xx) * np.cos(17 * yy) + 0.1 * rng.standard_normal((size, size))
    vis[(yy > 0.7)] = 0.2  # "ground"
    vis[(np.abs(xx - 0.5) < 0.02)] = 0.9  # a "pole"
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vis, 0, 1).astype(np.float32)


def demo_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where to write ir.png, vis.png and fused.png.")] = Path("fusionmamba-demo"),
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Write a synthetic IR/visible pair and its fusion."""
    dev = resolve_device(device)
    model = load_model(weights or default_weights_for("ir_vis"), device=dev)
    ir, vis = synthetic_pair()
    output_dir.mkdir(parents=True, exist_ok=True)
    fused = Fuser(model, task="ir_vis", device=dev).fuse(LoadedImage(ir), LoadedImage(vis))
    for name, pixels in (("ir.png", ir), ("vis.png", vis), ("fused.png", fused.pixels)):
        write_image(output_dir / name, pixels)
    console.print(f"wrote {output_dir / 'ir.png'}, {output_dir / 'vis.png'} and {output_dir / 'fused.png'}")
    console.print(f"same thing on your own images: fusionmamba fuse {output_dir / 'ir.png'} {output_dir / 'vis.png'} -o fused.png --task ir_vis")

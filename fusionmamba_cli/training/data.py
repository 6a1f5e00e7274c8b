"""Training pairs: a task split read from ROOT/<task>/<split>/<modality>/<name>.png (or a packed
.npz of the same), held in memory as uint8 luminance in the network's order (x1, x2), served as
random crops with flips and 90-degree rotations (the paper augments by rotation).

Sampling is a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have, on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from fusionmamba_cli.datasets import list_split_pairs, split_dir
from fusionmamba_cli.errors import DataLayoutError
from fusionmamba_cli.imaging.colour import rgb_to_ycbcr
from fusionmamba_cli.imaging.io import read_image
from fusionmamba_cli.tasks import get_task


@dataclass
class PairSet:
    """uint8 luminance pairs in network order: x1 = visible / MRI / PC, x2 = IR / CT / PET / SPECT / GFP."""

    names: list[str]
    tasks: list[str]
    x1: list[np.ndarray]
    x2: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    def extend(self, other: "PairSet") -> None:
        self.names += other.names
        self.tasks += other.tasks
        self.x1 += other.x1
        self.x2 += other.x2


def _luma_uint8(path: Path) -> np.ndarray:
    image = read_image(path)
    pixels = rgb_to_ycbcr(image.pixels)[..., 0] if image.is_colour else image.pixels
    return np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def load_split(root: Path, task: str, split: str) -> PairSet:
    """Every pair of a task split as uint8 luminance, in the network's order."""
    order = get_task(task)
    pairs = PairSet([], [], [], [])
    for name, first, second in list_split_pairs(root, task, split):
        x1, x2 = order.to_network_order(_luma_uint8(first), _luma_uint8(second))
        pairs.names.append(name)
        pairs.tasks.append(task)
        pairs.x1.append(x1)
        pairs.x2.append(x2)
    if not len(pairs):
        raise DataLayoutError(f"{split_dir(root, task, split)}: no image pairs found")
    return pairs


def _shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    height, width = image.shape
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


# Lossless encodings for packed luminance: WebP at quality > 100 is lossless and ~25 % smaller than
# PNG on this data (what matters under a transfer limit); both decode back bit-exactly as grey.
PACK_ENCODINGS = {"png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 9]), "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])}


def pack_splits(
    root: Path, tasks: list[str], split: str, out: Path, max_side: int | None = None, encoding: str = "png"
) -> Path:
    """Write task splits to one .npz of losslessly encoded luminance (compact, for carrying to a GPU
    machine); images with a longer side above `max_side` are downscaled (area) to it."""
    if encoding not in PACK_ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(PACK_ENCODINGS)}, got {encoding!r}")
    suffix, params = PACK_ENCODINGS[encoding]
    arrays: dict[str, np.ndarray] = {}
    for task in tasks:
        pairs = load_split(root, task, split)
        for name, x1, x2 in zip(pairs.names, pairs.x1, pairs.x2):
            for key, image in (("x1", x1), ("x2", x2)):
                ok, encoded = cv2.imencode(suffix, _shrink(image, max_side), params)
                if not ok:
                    raise DataLayoutError(f"{task}/{split}/{name}: could not encode as {encoding}")
                arrays[f"{task}/{split}/{name}/{key}"] = encoded
    np.savez(out, **arrays)
    return out


def load_pack(path: Path, tasks: list[str], split: str) -> PairSet:
    """Pairs of the given tasks/split from a packed .npz."""
    pairs = PairSet([], [], [], [])
    with np.load(path) as data:
        keys = sorted(k for k in data.files if k.endswith("/x1"))
        for key in keys:
            task, key_split, name, _ = key.split("/")
            if task in tasks and key_split == split:
                pairs.names.append(name)
                pairs.tasks.append(task)
                pairs.x1.append(cv2.imdecode(data[key], cv2.IMREAD_GRAYSCALE))
                pairs.x2.append(cv2.imdecode(data[key[:-2] + "x2"], cv2.IMREAD_GRAYSCALE))
    if not len(pairs):
        raise DataLayoutError(f"{path}: no pairs for tasks {tasks} / split {split!r}")
    return pairs


def load_pairs(data: Path, tasks: list[str], split: str) -> PairSet:
    """From a data root folder or a packed .npz."""
    if data.suffix == ".npz":
        if not data.is_file():
            raise DataLayoutError(f"{data}: packed data file not found")
        return load_pack(data, tasks, split)
    pairs = PairSet([], [], [], [])
    for task in tasks:
        pairs.extend(load_split(data, task, split))
    return pairs


HOLDOUT_SPLIT = "holdout"


def holdout_mask(names: list[str], every: int) -> list[bool]:
    """Which of one task's pairs (sorted by name) are held out: every `every`-th, starting with the
    first; a task with `every` pairs or fewer holds out its last one (so each task is validated)."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    held = set(order[::every]) if len(names) > every else {order[-1]}
    return [i in held for i in range(len(names))]


def split_holdout(pairs: PairSet, every: int) -> tuple[PairSet, PairSet | None]:
    """(training pairs, held-out validation pairs) carved from a train split, per task; every = 0
    holds nothing out. The validation split the shipped weights were chosen on."""
    if every <= 0:
        return pairs, None
    train, held = PairSet([], [], [], []), PairSet([], [], [], [])
    for task in dict.fromkeys(pairs.tasks):
        index = [i for i, t in enumerate(pairs.tasks) if t == task]
        mask = holdout_mask([pairs.names[i] for i in index], every)
        for i, is_held in zip(index, mask):
            target = held if is_held else train
            target.names.append(pairs.names[i])
            target.tasks.append(task)
            target.x1.append(pairs.x1[i])
            target.x2.append(pairs.x2[i])
    return train, held


def batch_indices(step: int, batch_size: int, n_pairs: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """The pair indices this rank trains on at `step`: epochs of seeded permutations, sharded by rank."""
    global_batch = batch_size * world
    reps = -(-global_batch // n_pairs)  # tiny datasets: repeat within an epoch
    per_epoch = max(1, (n_pairs * reps) // global_batch)
    epoch, k = divmod(step, per_epoch)
    order = np.concatenate([np.random.default_rng([seed, epoch, r]).permutation(n_pairs) for r in range(reps)])
    chunk = order[k * global_batch:(k + 1) * global_batch]
    return chunk[rank::world]


def _augment(x1: np.ndarray, x2: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = x1.shape
    if height < crop or width < crop:
        pad = ((0, max(0, crop - height)), (0, max(0, crop - width)))
        x1, x2 = np.pad(x1, pad, mode="reflect"), np.pad(x2, pad, mode="reflect")
        height, width = x1.shape
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    x1, x2 = x1[top:top + crop, left:left + crop], x2[top:top + crop, left:left + crop]
    turns = int(rng.integers(0, 4))
    x1, x2 = np.rot90(x1, turns), np.rot90(x2, turns)
    if rng.random() < 0.5:
        x1, x2 = x1[:, ::-1], x2[:, ::-1]
    return x1, x2


def make_batch(pairs: PairSet, step: int, batch_size: int, crop: int, seed: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(x1, x2) float batches (B, 1, crop, crop) in [0, 1] for `step` on this rank."""
    indices = batch_indices(step, batch_size, len(pairs), seed, rank, world)
    out1, out2 = [], []
    for position, index in enumerate(indices):
        rng = np.random.default_rng([seed, step, rank * batch_size + position, 7])
        a, b = _augment(pairs.x1[index], pairs.x2[index], crop, rng)
        out1.append(np.ascontiguousarray(a))
        out2.append(np.ascontiguousarray(b))
    to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32) / 255.0)  # noqa: E731
    return to_tensor(out1), to_tensor(out2)

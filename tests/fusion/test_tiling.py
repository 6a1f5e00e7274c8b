"""Tiled inference: coverage, seamless blending, the automatic pixel budget, bounded network calls."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fusionmamba_cli import load_model
from fusionmamba_cli.fusion import pipeline
from fusionmamba_cli.fusion.batch import fuse_pairs
from fusionmamba_cli.fusion.pairs import ImagePair
from fusionmamba_cli.fusion.pipeline import Fuser, default_max_pixels, parse_pixels
from fusionmamba_cli.fusion.tiling import fuse_tiled, tile_starts
from fusionmamba_cli.imaging.io import LoadedImage
from tests.cli.helpers import one_thread, save_grey  # noqa: F401 - one_thread: autouse fixture
from tests.conftest import smooth_image


@pytest.mark.parametrize("length,tile,overlap", [(1, 64, 16), (64, 64, 16), (65, 64, 16), (1000, 256, 64), (257, 100, 99)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        assert 0 <= start and start + min(tile, length) <= length
        covered[start : start + tile] = True
    assert covered.all()
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= min(overlap, tile - 1)  # neighbours overlap by at least `overlap`


def test_blend_weights_discard_the_tile_margin_toward_neighbours_only():
    from fusionmamba_cli.fusion.tiling import blend_weights

    both = blend_weights(512, 128, fade_start=True, fade_end=True)
    assert both[:32].eq(0).all() and both[-32:].eq(0).all()  # outer quarter of the overlap: no weight
    assert both[96:-96].eq(1).all() and (both[32:96].diff() > 0).all()  # linear ramp over the middle half
    border = blend_weights(512, 128, fade_start=False, fade_end=True)
    assert border[:96].eq(1).all() and border[-1] == 0  # the image border keeps full weight
    assert blend_weights(40, 0, fade_start=True, fade_end=True).eq(1).all()


def test_blending_is_exact_for_a_pointwise_network():
    """A network with no spatial context gives the same result tiled: the blend weights sum to 1."""
    x1, x2 = torch.rand(2, 1, 150, 230), torch.rand(2, 1, 150, 230)
    net = lambda a, b: 0.3 * a + 0.7 * b * b
    tiled = fuse_tiled(net, x1, x2, tile=64, overlap=16)
    assert torch.allclose(tiled, net(x1, x2), atol=1e-6)


@pytest.fixture(scope="module")
def micro(micro_weights):
    return load_model(micro_weights)


def test_tiled_matches_untiled_closely(micro):
    """A mid-size image fused whole and in tiles: close everywhere, no seams (BENCHMARKS.md has the
    `compact` numbers at 1536x1024)."""
    first, second = smooth_image(160, 224, 1), smooth_image(160, 224, 2)
    whole = Fuser(micro, max_pixels=10**9).fuse(LoadedImage(first), LoadedImage(second)).pixels
    tiled = Fuser(micro, tile=96, tile_overlap=24).fuse(LoadedImage(first), LoadedImage(second)).pixels
    difference = np.abs(whole - tiled)
    assert difference.max() < 0.05 and difference.mean() < 0.005, (difference.max(), difference.mean())


def _spy_calls(monkeypatch, model) -> list[tuple[int, ...]]:
    """Record the input shape of every real network call."""
    shapes = []
    real = model.forward

    def forward(x1, x2):
        shapes.append(tuple(x1.shape))
        return real(x1, x2)

    monkeypatch.setattr(model, "forward", forward)
    return shapes


def test_automatic_tiling_keeps_network_calls_within_budget(micro, monkeypatch):
    shapes = _spy_calls(monkeypatch, micro)
    fuser = Fuser(micro, max_pixels=64 * 64, tile_overlap=8)
    assert fuser.auto_tile() == 64
    out = fuser.fuse(LoadedImage(smooth_image(100, 150, 1)), LoadedImage(smooth_image(100, 150, 2)))
    assert out.pixels.shape == (100, 150)
    assert len(shapes) > 1
    assert all(b * fuser.padded_pixels(h, w) <= 64 * 64 for b, _, h, w in shapes)


def test_no_tiling_below_budget(micro, monkeypatch):
    shapes = _spy_calls(monkeypatch, micro)
    Fuser(micro, max_pixels=200 * 232).fuse(LoadedImage(smooth_image(200, 230, 1)), LoadedImage(smooth_image(200, 230, 2)))
    assert shapes == [(1, 1, 200, 230)]


def test_batches_respect_the_budget(micro, monkeypatch, tmp_path):
    """--batch-size 8 of 32x32 pairs with a budget of 3 such images: network calls hold at most 3."""
    items = []
    for i in range(7):
        a, b = save_grey(tmp_path / f"a{i}.png", 32, 32, seed=i), save_grey(tmp_path / f"b{i}.png", 32, 32, seed=50 + i)
        items.append((ImagePair(f"p{i}", a, b), tmp_path / f"out{i}.png"))
    shapes = _spy_calls(monkeypatch, micro)
    outcomes = fuse_pairs(Fuser(micro, max_pixels=3 * 32 * 32), items, batch_size=8)
    assert [o.status for o in outcomes] == ["ok"] * 7
    assert max(s[0] for s in shapes) == 3 and sum(s[0] for s in shapes) == 7
    assert all(s[2:] == (32, 32) for s in shapes)  # batched, not tiled


def test_tiled_strip(micro):
    """A 1 x 1000 strip through tiles (height 1 is padded inside each tile) comes back 1 x 1000."""
    strip_a, strip_b = smooth_image(1, 1000, 1), smooth_image(1, 1000, 2)
    out = Fuser(micro, max_pixels=128 * 128, tile_overlap=16).fuse(LoadedImage(strip_a), LoadedImage(strip_b))
    assert out.pixels.shape == (1, 1000) and np.isfinite(out.pixels).all()


def test_pixel_budget_sources(micro, monkeypatch):
    assert parse_pixels("4000000") == parse_pixels("4M") == 4_000_000
    assert parse_pixels("2048x2048") == 2048 * 2048
    with pytest.raises(ValueError):
        parse_pixels("lots")
    monkeypatch.setenv(pipeline.MAX_PIXELS_ENV, "1.5M")
    assert default_max_pixels(micro, "cpu") == 1_500_000
    assert Fuser(micro).max_pixels == 1_500_000
    assert Fuser(micro, max_pixels=1234).max_pixels == 1234  # the argument beats the environment
    monkeypatch.delenv(pipeline.MAX_PIXELS_ENV)
    automatic = default_max_pixels(micro, "cpu")
    bytes_per_pixel = pipeline.estimated_bytes_per_pixel(micro)
    assert automatic * bytes_per_pixel <= 0.26 * _physical_memory()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on one machine share its memory
    assert abs(default_max_pixels(micro, "cpu") - automatic / 2) <= 1


def _physical_memory() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

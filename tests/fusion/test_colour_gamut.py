"""Colour output: the fused luma is written as fused (chroma scaled into the RGB cube, never clipped)."""

import numpy as np

from fusionmamba_cli.imaging.colour import rgb_to_ycbcr, ycbcr_to_rgb, ycbcr_to_rgb_in_gamut


def test_in_gamut_colours_round_trip():
    rgb = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    np.testing.assert_allclose(ycbcr_to_rgb_in_gamut(rgb_to_ycbcr(rgb)), rgb, atol=1e-6)


def test_out_of_gamut_pixels_keep_their_luma_and_hue_direction():
    rng = np.random.default_rng(1)
    ycbcr = rgb_to_ycbcr(rng.random((40, 40, 3)).astype(np.float32))
    ycbcr[..., 0] = rng.random((40, 40))  # a new (fused) luma under the old chroma: many leave the cube
    clipped = np.clip(ycbcr_to_rgb(ycbcr), 0, 1)
    kept = ycbcr_to_rgb_in_gamut(ycbcr)
    assert kept.min() >= 0 and kept.max() <= 1
    np.testing.assert_allclose(rgb_to_ycbcr(kept)[..., 0], ycbcr[..., 0], atol=1e-5)
    assert np.abs(rgb_to_ycbcr(clipped)[..., 0] - ycbcr[..., 0]).max() > 0.05  # what clipping did
    chroma_in, chroma_out = ycbcr[..., 1:] - 0.5, rgb_to_ycbcr(kept)[..., 1:] - 0.5
    ratio = np.sum(chroma_in * chroma_out, -1) / np.maximum(np.sum(chroma_in**2, -1), 1e-12)
    assert ratio.min() >= -1e-4 and ratio.max() <= 1 + 1e-4  # chroma only shrinks towards grey


def test_white_and_black_lumas_become_grey():
    ycbcr = np.array([[[1.0, 0.9, 0.2], [0.0, 0.1, 0.8]]], np.float32)
    np.testing.assert_allclose(ycbcr_to_rgb_in_gamut(ycbcr), [[[1, 1, 1], [0, 0, 0]]], atol=1e-6)

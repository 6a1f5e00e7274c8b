"""Fusing images with a loaded network: colour handling, tiling, directory batches."""

from fusionmamba_cli.fusion.pairs import ImagePair, match_pairs
from fusionmamba_cli.fusion.pipeline import Fuser, fuse_images

__all__ = ["Fuser", "ImagePair", "fuse_images", "match_pairs"]

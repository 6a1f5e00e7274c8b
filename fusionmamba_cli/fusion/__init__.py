"""Fusing images with a loaded network: colour handling, tiling, directory batches."""

from fusionmamba_cli.fusion.batch import PairOutcome, fuse_directory, fuse_pairs
from fusionmamba_cli.fusion.pairs import ImagePair, images_by_stem, match_pairs
from fusionmamba_cli.fusion.pipeline import Fuser, fuse_images
from fusionmamba_cli.fusion.plan import BatchPlan, BatchPlanError, plan_batch

__all__ = [
    "BatchPlan",
    "BatchPlanError",
    "Fuser",
    "ImagePair",
    "PairOutcome",
    "fuse_directory",
    "fuse_images",
    "fuse_pairs",
    "images_by_stem",
    "match_pairs",
    "plan_batch",
]

"""Image files and colour: the only place that touches PIL / OpenCV / uint8."""

from fusionmamba_cli.imaging.colour import rgb_to_ycbcr, ycbcr_to_rgb
from fusionmamba_cli.imaging.io import IMAGE_SUFFIXES, LoadedImage, read_image, write_image

__all__ = ["IMAGE_SUFFIXES", "LoadedImage", "read_image", "rgb_to_ycbcr", "write_image", "ycbcr_to_rgb"]

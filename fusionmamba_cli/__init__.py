"""fusionmamba: multimodal image fusion with FusionMamba (IR-VIS, CT/PET/SPECT-MRI, GFP-PC).

Public API (stable): `load_model`, `FusionMamba`, `FusionMambaConfig`, `create_model`,
`selective_scan`, `fuse_images`; folders: `fusionmamba_cli.fusion.plan_batch` / `fuse_directory`.
"""

from fusionmamba_cli.checkpoints import load_model, save_weights
from fusionmamba_cli.fusion import fuse_images
from fusionmamba_cli.model import FusionMamba, FusionMambaConfig, create_model, get_preset
from fusionmamba_cli.ops import selective_scan
from fusionmamba_cli.version import __version__

__all__ = [
    "FusionMamba",
    "FusionMambaConfig",
    "__version__",
    "create_model",
    "fuse_images",
    "get_preset",
    "load_model",
    "save_weights",
    "selective_scan",
]

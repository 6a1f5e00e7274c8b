"""The FusionMamba network, its configuration and presets."""

from fusionmamba_cli.model.config import FusionMambaConfig, get_preset, list_presets, register_preset
from fusionmamba_cli.model.network import FusionMamba


def create_model(preset: str = "compact", **overrides) -> FusionMamba:
    """A freshly initialised network of a named preset, with config fields overridden."""
    return FusionMamba(get_preset(preset, **overrides))


__all__ = ["FusionMamba", "FusionMambaConfig", "create_model", "get_preset", "list_presets", "register_preset"]

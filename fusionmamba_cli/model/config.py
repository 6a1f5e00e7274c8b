"""The network's configuration and its named presets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

BLOCK_TYPES = ("dvss", "evss", "transformer")
FUSION_TYPES = ("dffm", "dvss")
# What the network's output adds to its reconstruction head (the paper does not say; see network.py):
# "authors": 2*x1 + 2*x2 as in the authors' code; "max": max(x1, x2), so the head learns a
# correction to the max rule that the intensity loss targets; "two_scale": the two-scale rule of
# `model/two_scale.py` (base of the brighter blurred source + the stronger detail), so the head starts
# from a good classical fusion and learns its correction; "none": the head alone.
OUTPUT_SKIPS = ("authors", "max", "two_scale", "none")


@dataclass(frozen=True)
class FusionMambaConfig:
    """Hyper-parameters of FusionMamba; defaults are the authors' default model.

    `dims` doubles per level (PatchMerging maps C to 2C); the decoder mirrors it. `len(depths)` is
    the number of U-Net levels. `d_state` is the CMFM state size; the authors' DVSS blocks always
    use 16 whatever `d_state` says (`dvss_d_state` keeps that quirk explicit).
    `block`, `fusion`, `use_dfem`, `use_cmfm` are the paper's Table 7 ablations. `output_skip` is what
    the output adds to the head (OUTPUT_SKIPS); it has no parameters, and files without it are "authors".
    `two_scale_sigma` / `two_scale_gain` / `two_scale_floor` / `two_scale_energy_sigma` /
    `two_scale_weight_sigma` / `two_scale_smooth_x2` are the base blur, detail gain, halo floor,
    detail-energy window, choice softening and x2 pre-blur of the "two_scale" skip
    (`model/two_scale.TwoScaleParams`). `refine_width` > 0 adds a full-resolution refinement head
    of `refine_depth` 3x3 convolutions (`model/refine.py`); 0, and files without it, have none.
    """

    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 2, 9, 2)
    depths_decoder: tuple[int, ...] = (2, 9, 2, 2)
    d_state: int = 16
    dvss_d_state: int = 16
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    block: str = "dvss"
    fusion: str = "dffm"
    use_dfem: bool = True
    use_cmfm: bool = True
    output_skip: str = "authors"
    two_scale_sigma: float = 4.0
    two_scale_gain: float = 1.0
    two_scale_floor: float = 0.3
    two_scale_energy_sigma: float = 2.0
    two_scale_weight_sigma: float = 1.0
    two_scale_smooth_x2: float = 0.0
    refine_width: int = 0
    refine_depth: int = 4
    patch_size: int = field(default=4, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "depths_decoder", tuple(int(d) for d in self.depths_decoder))
        if not self.dims or len(self.dims) != len(self.depths) or len(self.depths) != len(self.depths_decoder):
            raise ValueError("dims, depths and depths_decoder must have the same, non-zero length")
        if any(b != 2 * a for a, b in zip(self.dims, self.dims[1:])):
            raise ValueError(f"dims must double from level to level, got {self.dims}")
        if self.dims[0] % 4:
            raise ValueError(f"dims[0] must be a multiple of 4 (the head splits it in 4x4), got {self.dims[0]}")
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {BLOCK_TYPES}, got {self.block!r}")
        if self.fusion not in FUSION_TYPES:
            raise ValueError(f"fusion must be one of {FUSION_TYPES}, got {self.fusion!r}")
        if self.output_skip not in OUTPUT_SKIPS:
            raise ValueError(f"output_skip must be one of {OUTPUT_SKIPS}, got {self.output_skip!r}")
        if self.two_scale_sigma <= 0 or self.two_scale_gain <= 0:
            raise ValueError(f"two_scale_sigma and two_scale_gain must be positive, got {self.two_scale_sigma}, {self.two_scale_gain}")
        if not 0 <= self.two_scale_floor < 1:
            raise ValueError(f"two_scale_floor must be in [0, 1), got {self.two_scale_floor}")
        if self.refine_width < 0 or (self.refine_width and self.refine_depth < 1):
            raise ValueError(f"refine_width must be >= 0 and refine_depth >= 1, got {self.refine_width}, {self.refine_depth}")
        if self.refine_width and self.output_skip not in ("max", "two_scale"):
            raise ValueError(f"a refinement head refines a rule: it needs output_skip 'max' or 'two_scale', got {self.output_skip!r}")
        if self.two_scale_energy_sigma <= 0 or self.two_scale_weight_sigma < 0 or self.two_scale_smooth_x2 < 0:
            raise ValueError("two_scale_energy_sigma must be positive and two_scale_weight_sigma, two_scale_smooth_x2 "
                             f"non-negative, got {self.two_scale_energy_sigma}, {self.two_scale_weight_sigma}, {self.two_scale_smooth_x2}")
        if self.patch_size != 4:
            raise ValueError("only patch_size=4 works end to end (the head always upsamples x4)")

    @property
    def levels(self) -> int:
        """Number of U-Net levels."""
        return len(self.depths)

    @property
    def dims_decoder(self) -> tuple[int, ...]:
        """Decoder widths: the encoder's reversed (forced by the skip additions)."""
        return tuple(reversed(self.dims))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (4x4 patches, then one halving per extra level)."""
        return self.patch_size * 2 ** (self.levels - 1)

    def to_json(self) -> str:
        """Serialise for safetensors metadata."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "FusionMambaConfig":
        """Build from a dict, ignoring unknown keys; accepts the authors' constructor arguments too."""
        data = dict(data)
        if isinstance(data.get("dims"), int):  # the authors allow dims=c meaning c * 2**i
            data["dims"] = [data["dims"] * 2**i for i in range(len(data.get("depths", cls.depths)))]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "FusionMambaConfig":
        return cls.from_dict(json.loads(text))


_PRESETS: dict[str, FusionMambaConfig] = {}


def register_preset(name: str, config: FusionMambaConfig) -> None:
    _PRESETS[name] = config


def get_preset(name: str, **overrides) -> FusionMambaConfig:
    """The named preset, with any field overridden (e.g. an ablation switch)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(_PRESETS))}")
    return replace(_PRESETS[name], **overrides) if overrides else _PRESETS[name]


def list_presets() -> list[str]:
    return sorted(_PRESETS)


# The authors' default model and the README's "tiny" CT-MRI variant.
register_preset("official", FusionMambaConfig())
register_preset("official-tiny", FusionMambaConfig(depths=(2, 2, 1, 2), depths_decoder=(2, 1, 2, 2)))
# Our shipped weights: 6x narrower than official, shallow; built for sub-100 ms CPU fusion at 256^2.
register_preset(
    "compact",
    FusionMambaConfig(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.0),
)
# compact with the output skip of the max rule (see OUTPUT_SKIPS); experimental: under the paper's loss
# its head can settle at zero, i.e. the max rule itself (BENCHMARKS.md, training round 3).
register_preset(
    "compact-max",
    FusionMambaConfig(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.0, output_skip="max"),
)
# compact on top of the two-scale rule (OUTPUT_SKIPS): what the shipped task weights use. The head
# starts at zero, so an untrained network is the rule itself and training learns its correction.
register_preset(
    "compact-two-scale",
    FusionMambaConfig(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.0, output_skip="two_scale"),
)
# compact-two-scale with a full-resolution refinement head (model/refine.py), which the rewards can
# move where the authors' quarter-resolution head did not (BENCHMARKS.md, round 8).
register_preset(
    "compact-refine",
    FusionMambaConfig(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.0,
                      output_skip="two_scale", refine_width=16, refine_depth=5),
)
# Twice as wide as compact, for GPU users who want more capacity.
register_preset(
    "compact-large",
    FusionMambaConfig(dims=(32, 64, 128, 256), depths=(1, 2, 2, 1), depths_decoder=(1, 2, 2, 1), drop_path_rate=0.05),
)
# Three levels, the parity fixture's shape.
register_preset(
    "fixture",
    FusionMambaConfig(dims=(16, 32, 64), depths=(1, 2, 1), depths_decoder=(1, 2, 1), drop_path_rate=0.0),
)
# Smallest working network, for fast tests.
register_preset(
    "micro",
    FusionMambaConfig(dims=(8, 16), depths=(1, 1), depths_decoder=(1, 1), d_state=4, dvss_d_state=4, drop_path_rate=0.0),
)

"""The FusionMamba network: shared-weight U-Net encoder of DVSS blocks, a DFFM per level, decoder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_cli.model.blocks import BLOCKS
from fusionmamba_cli.model.config import FusionMambaConfig
from fusionmamba_cli.model.dffm import DFFM, DVSSFusion
from fusionmamba_cli.model.layers import PatchEmbed, PatchExpand, PatchMerging, has_hooks
from fusionmamba_cli.model.refine import RefineHead
from fusionmamba_cli.model.ssm import ScanCore2D
from fusionmamba_cli.model.two_scale import TwoScaleParams, params_from_config, two_scale_fusion
from fusionmamba_cli.ops.fused import cpu_kernels_for
from fusionmamba_cli.ops.selective_scan import check_backend_name


class EncoderStage(nn.Module):
    """`depth` blocks at width `dim`, then PatchMerging to 2*dim at half resolution (all but the last)."""

    def __init__(self, dim: int, depth: int, block: type[nn.Module], d_state: int, drop_paths: list[float], downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(block(dim, d_state=d_state, drop_path=p) for p in drop_paths[:depth])
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class DecoderStage(nn.Module):
    """PatchExpand from 2*dim to dim at double resolution (all but the first), then `depth` blocks."""

    def __init__(self, dim: int, depth: int, block: type[nn.Module], d_state: int, drop_paths: list[float], upsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(block(dim, d_state=d_state, drop_path=p) for p in drop_paths[:depth])
        self.upsample = PatchExpand(2 * dim, scale=2) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x)
        for blk in self.blocks:
            x = blk(x)
        return x


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple: reflection where the image is large enough, else replication."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class FusionMamba(nn.Module):
    """FusionMamba (Xie et al.), parameter-compatible with the authors' `VSSM_Fusion`.

    forward(x1, x2): (B, 1, H, W) float tensors in [0, 1], in the authors' order (x1 = visible / MRI /
    phase contrast, x2 = IR / CT / PET / SPECT / GFP). Any H, W >= 1: padded to `size_multiple`
    and cropped back. Returns the unclamped (B, 1, H, W) fusion, head + the
    configured output skip (`output_skip`: 2*x1 + 2*x2 as in the authors' code, max(x1, x2), the
    two-scale rule, or none).
    """

    def __init__(self, config: FusionMambaConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or FusionMambaConfig()
        levels, dims = cfg.levels, cfg.dims
        block = BLOCKS[cfg.block]
        encoder_rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        decoder_rates = list(reversed(encoder_rates))  # the decoder runs the schedule backwards

        self.patch_embed1 = PatchEmbed(dims[0], cfg.patch_size)
        self.patch_embed2 = PatchEmbed(dims[0], cfg.patch_size)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.layers = nn.ModuleList()
        for i in range(levels):
            start = sum(cfg.depths[:i])
            self.layers.append(
                EncoderStage(dims[i], cfg.depths[i], block, cfg.dvss_d_state, encoder_rates[start:], downsample=i < levels - 1)
            )
        self.layers_up = nn.ModuleList()
        for j, dim in enumerate(cfg.dims_decoder):
            start = sum(cfg.depths_decoder[:j])
            self.layers_up.append(
                DecoderStage(dim, cfg.depths_decoder[j], block, cfg.dvss_d_state, decoder_rates[start:], upsample=j > 0)
            )
        self.final_up = PatchExpand(dims[0], scale=4)
        self.final_conv = nn.Conv2d(dims[0] // 4, 1, kernel_size=1)
        if cfg.fusion == "dffm":
            self.Cross_block = nn.ModuleList(
                DFFM(d, cfg.d_state, cfg.attn_drop_rate, cfg.use_dfem, cfg.use_cmfm) for d in dims
            )
        else:
            self.Cross_block = nn.ModuleList(DVSSFusion(d, cfg.dvss_d_state) for d in dims)
        self.apply(_init_weights)
        if cfg.output_skip in ("max", "two_scale"):  # start as the rule exactly; training learns the correction
            nn.init.zeros_(self.final_conv.weight)
            nn.init.zeros_(self.final_conv.bias)
        self.refine = RefineHead(cfg.refine_width, cfg.refine_depth) if cfg.refine_width else None

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters that never reach the output (kept for checkpoint compatibility): level 0's
        fusion block, whose output the authors discard, and DFEM's declared-but-unused conv."""
        unused = list(self.Cross_block[0].parameters())
        unused += [p for name, p in self.named_parameters() if ".Diff_enhance." in name]
        return unused

    @property
    def scan_backend(self) -> str | None:
        """The scan backend forced on the network's SSMs (None: the dispatcher's default)."""
        return next((m.scan_backend for m in self.modules() if isinstance(m, ScanCore2D)), None)

    def set_scan_backend(self, backend: str | None) -> None:
        """Force one scan backend for every SSM in the network (None: dispatcher's choice)."""
        backend = None if backend is None else check_backend_name(backend)
        for module in self.modules():
            if isinstance(module, ScanCore2D):
                module.scan_backend = backend

    @contextmanager
    def scan_backend_as(self, backend: str | None) -> Iterator[FusionMamba]:
        """Run the block with `backend` forced (None: the dispatcher's default), then restore the
        previous one. A CUDA graph captured before keeps the backend it captured."""
        previous = self.scan_backend
        self.set_scan_backend(backend)
        try:
            yield self
        finally:
            self.set_scan_backend(previous)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return x, skips

    def forward_padded(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The network on inputs whose sides are already multiples of `size_multiple`; returns the head."""
        e1, e2 = self.pos_drop(self.patch_embed1(x1)), self.pos_drop(self.patch_embed2(x2))
        if self.training or has_hooks(*self.layers.modules()):  # hooks see each stream, as in the authors' code
            (enc1, skips1), (enc2, skips2) = self._encode(e1), self._encode(e2)
        else:  # one shared encoder: both sources as one batch of 2B, half the calls (CPU: 46 -> 34 ms at 256x256)
            enc, skips = self._encode(torch.cat([e1, e2]))
            enc1, enc2 = enc.chunk(2)
            skips1, skips2 = zip(*(skip.chunk(2) for skip in skips))
        x = self.layers_up[0](enc1 + enc2)
        levels = self.config.levels
        # The decoder uses fused levels L-1 .. 1; the authors also compute level 0 and discard it
        # (its parameters never get a gradient), so we skip that work.
        for j in range(1, levels):
            level = levels - j
            fused = self.Cross_block[level](skips1[level], skips2[level])
            x = self.layers_up[j](x + fused)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """final_up (x4 depth-to-space + LN) then the 1x1 final_conv; on fp32 CPU inference one fused
        kernel (the (B, 4H, 4W, C/16) map it would normalise was the forward's largest LayerNorm)."""
        up, conv = self.final_up, self.final_conv
        fusable = conv.out_channels == 1 and conv.bias is not None and not has_hooks(up, up.norm, conv)
        kernels = cpu_kernels_for(x, up.norm.weight, up.norm.bias, conv.weight, conv.bias) if fusable else None
        if kernels is None:
            return conv(up(x).permute(0, 3, 1, 2))
        return kernels.norm_project(up.expand(x), up.scale, up.norm.weight, up.norm.bias, up.norm.eps, conv.weight, conv.bias)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape != x2.shape or x1.ndim != 4 or x1.shape[1] != 1:
            raise ValueError(f"expected two (B, 1, H, W) tensors of one shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        height, width = x1.shape[-2:]
        head = self.forward_padded(_pad_to_multiple(x1, self.size_multiple), _pad_to_multiple(x2, self.size_multiple))
        head = head[..., :height, :width]
        if self.config.output_skip == "authors":
            return head + x1 + x2 + x1 + x2  # the authors' HEAD adds both inputs twice, in this order (parity)
        skip = self._skip(x1, x2)
        if skip is None:
            return head
        fused = head + skip
        if self.refine is not None:
            fused = fused + self.refine(x1, x2, skip, head)
        return fused

    def _skip(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor | None:
        """What the output adds to the head (`output_skip` "max" or "two_scale"), None for "none"."""
        skip = self.config.output_skip
        if skip == "max":
            return torch.maximum(x1, x2)
        if skip == "two_scale":
            return two_scale_fusion(x1, x2, self.two_scale_params)
        return None

    @property
    def two_scale_params(self) -> TwoScaleParams:
        """The parameters of the two-scale rule (the "two_scale" skip, and the loss' target)."""
        return params_from_config(self.config)


def _init_weights(module: nn.Module) -> None:
    """The authors' init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

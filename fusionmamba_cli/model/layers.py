"""Small building blocks shared by the FusionMamba modules. Feature maps are channels-last (B, H, W, C)
unless a docstring says otherwise; parameter names follow the authors' state dict."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_cli.ops.fused import cpu_kernels_for, tensors_identity


def has_hooks(*modules: nn.Module) -> bool:
    """Whether a forward hook (global or on any of `modules`) would see these modules run: a fused
    kernel that computes them without calling them is then not taken."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dim (same parameters and state dict); fp32 CPU inference runs the
    fused kernel of `ops/cpu_kernels.py` (2-4x faster than torch's on rows of 4-64 channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = len(self.normalized_shape) == 1 and self.weight is not None and self.bias is not None
        kernels = cpu_kernels_for(x, self.weight, self.bias) if plain else None
        if kernels is None:
            return super().forward(x)
        return kernels.layer_norm(x, self.weight, self.bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample during training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LDC(nn.Module):
    """Learnable Descriptive Convolution on a channels-first map (B, C, H, W), 3x3, no bias.

    Effective kernel W * (base_mask - theta * M[o,i] * E * S[o,i]), E the one-hot centre tap and
    S[o,i] the sum of W[o,i]: multiplicative on the centre tap (the authors' form, not CDC's).
    `base_mask` is a frozen buffer: all ones by definition, but a checkpoint's stored value wins.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.register_buffer("base_mask", torch.ones(channels, channels, 3, 3))
        self.learnable_mask = nn.Parameter(torch.ones(channels, channels))
        self.learnable_theta = nn.Parameter(torch.full((1,), 0.5))
        centre = torch.zeros(3, 3)
        centre[1, 1] = 1.0
        self.register_buffer("centre", centre, persistent=False)
        self._inference_weight: tuple[tuple, torch.Tensor] | None = None  # (weights' identity, kernel)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Emit `base_mask` first, where the authors' state dict has it."""
        destination[prefix + "base_mask"] = self.base_mask if keep_vars else self.base_mask.detach()
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """A checkpoint without `base_mask` (ours drop it) loads strictly and keeps the all-ones default."""
        key = prefix + "base_mask"
        if key not in state_dict:
            state_dict[key] = torch.ones_like(self.base_mask)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


    def inference_weight(self) -> torch.Tensor:
        """`effective_weight()` computed once and reused while no weight changes (CPU inference: it
        was ~10 % of a compact forward); recomputed with autograd on, and on GPUs (graph capture)."""
        if torch.is_grad_enabled() or self.conv.weight.device.type != "cpu":
            return self.effective_weight()
        identity = tensors_identity(self.conv.weight, self.learnable_mask, self.learnable_theta, self.base_mask, self.centre)
        if identity is None:
            return self.effective_weight()
        if self._inference_weight is None or self._inference_weight[0] != identity:
            # channels-last like the maps it convolves (their permuted views): conv2d would
            # otherwise copy the kernel to that layout on every call
            self._inference_weight = (identity, self.effective_weight().contiguous(memory_format=torch.channels_last))
        return self._inference_weight[1]

    def effective_weight(self) -> torch.Tensor:
        weight = self.conv.weight
        tap_sum = weight.sum(dim=(2, 3), keepdim=True)
        modulation = self.learnable_theta * self.learnable_mask[:, :, None, None] * self.centre * tap_sum
        return weight * (self.base_mask.to(weight.dtype) - modulation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.inference_weight(), padding=1)


class ECA(nn.Module):
    """Efficient Channel Attention on channels-last maps: x * sigmoid(conv1d_k3(mean_hw(x)))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(conv1d_k3(mean_hw(x))): (B, 1, 1, C), what `forward` multiplies x by."""
        pooled = x.mean(dim=(1, 2))  # (B, C)
        # conv1d(k=3, zero padding) over channels written as its three taps: the same sum, without
        # conv1d's per-call cost on a (B, 1, C) input (~0.2 ms of oneDNN set-up a call on CPU)
        k = self.conv.kernel_size[0]
        windows = F.pad(pooled, (k // 2, k // 2)).unfold(1, k, 1)  # (B, C, k)
        return torch.sigmoid(windows @ self.conv.weight.reshape(k))[:, None, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x)


class SqueezeExcite(nn.Module):
    """v * sigmoid(W2 GELU(W1 mean_hw(LN v))): note the gate multiplies the un-normalised v."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 8)
        self.norm = LayerNorm(channels)
        self.global_reduce = nn.Linear(channels, hidden)
        self.channel_select = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(W2 GELU(W1 mean_hw(LN x))): (B, 1, 1, C), what `forward` multiplies x by."""
        reduce, select, norm = self.global_reduce, self.channel_select, self.norm
        hooked = has_hooks(norm, reduce, select)
        kernels = None if hooked else cpu_kernels_for(x, norm.weight, norm.bias, reduce.weight, select.weight)
        if kernels is not None:  # mean_hw(LN x) in one pass (LN x never materialised), then the MLP in one call
            gate = kernels.squeeze_excite_gate(x, norm.weight, norm.bias, norm.eps, reduce.weight, reduce.bias, select.weight, select.bias)
        else:
            gate = torch.sigmoid(select(F.gelu(reduce(norm(x).mean(dim=(1, 2))))))
        return gate[:, None, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class Mlp(nn.Module):
    """Linear(C, 4C) -> GELU -> Linear(4C, C): the FFN the authors add to every DVSS block."""

    def __init__(self, channels: int, ratio: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels * ratio)
        self.fc2 = nn.Linear(channels * ratio, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """(B, 1, H, W) image -> (B, H/4, W/4, C) tokens: 4x4 stride-4 conv, then LayerNorm."""

    def __init__(self, channels: int, patch_size: int = 4, in_chans: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, channels, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p = self.proj.kernel_size[0]
        if height % p or width % p:  # the conv drops the remainder; the model pads to a multiple first
            return self.norm(self.proj(x).permute(0, 2, 3, 1))
        # the non-overlapping p x p conv as one matmul over the patches, channels-last out directly
        # (conv2d with a 1-channel input cost ~0.3 ms a call on CPU, the matmul ~0.05)
        patches = x.reshape(batch, channels, height // p, p, width // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(batch, height // p, width // p, channels * p * p)
        tokens = torch.addmm(self.proj.bias, patches.reshape(-1, channels * p * p), self.proj.weight.reshape(self.proj.out_channels, -1).t())
        return self.norm(tokens.view(batch, height // p, width // p, -1))


class PatchMerging(nn.Module):
    """Halve H, W and double C: concat the 2x2 phases (ee, oe, eo, oo), LayerNorm(4C), Linear(4C, 2C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * channels, 2 * channels, bias=False)
        self.norm = LayerNorm(4 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(phases, dim=-1)))


class PatchExpand(nn.Module):
    """Depth-to-space upsampling by `scale`: Linear(C, scale*C), split channels as (p1, p2, c) with
    c = C/scale fastest (the authors' einops order), move (p1, p2) to space, LayerNorm(C/scale).

    scale=2 is the decoder's PatchExpand, scale=4 the head's Final_PatchExpand.
    """

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.out_channels = channels // scale
        self.expand = nn.Linear(channels, self.out_channels * scale * scale, bias=False)
        self.norm = LayerNorm(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        s, c = self.scale, self.out_channels
        x = self.expand(x).reshape(batch, height, width, s, s, c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height * s, width * s, c)
        return self.norm(x)

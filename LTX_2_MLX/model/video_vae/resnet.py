"""Residual blocks of the video VAE (ltx-core model/video_vae/resnet.py), channels-last."""

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.common.normalization import PixelNorm
from LTX_2_MLX.model.common.timestep_embedding import PixArtAlphaCombinedTimestepSizeEmbeddings
from LTX_2_MLX.model.video_vae.convolution import CausalConv3d, PointwiseConv3d

NORM_GROUPS = 32
RESNET_EPS = 1e-6


@mx.compile
def _modulated_silu(x: mx.array, scale: mx.array, shift: mx.array) -> mx.array:
    # One fused kernel instead of four passes over the largest activations of the decoder.
    x = x * (1 + scale) + shift
    return x * mx.sigmoid(x)


def make_norm(norm_layer: str, channels: int) -> nn.Module:
    if norm_layer == "group_norm":
        return nn.GroupNorm(NORM_GROUPS, channels, eps=RESNET_EPS, pytorch_compatible=True)
    return PixelNorm(eps=1e-8)


class ResnetBlock3D(nn.Module):
    """norm → (modulate) → SiLU → conv, twice, plus a shortcut (1×1×1 conv when channels change)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        norm_layer: str = "pixel_norm",
        timestep_conditioning: bool = False,
        spatial_padding_mode: str = "zeros",
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = make_norm(norm_layer, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, spatial_padding_mode=spatial_padding_mode)
        self.norm2 = make_norm(norm_layer, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, spatial_padding_mode=spatial_padding_mode)
        if in_channels != out_channels:
            # GroupNorm with one group: a LayerNorm over channels and positions together.
            self.norm3 = nn.GroupNorm(1, in_channels, eps=RESNET_EPS, pytorch_compatible=True)
            self.conv_shortcut = PointwiseConv3d(in_channels, out_channels)
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.scale_shift_table = mx.zeros((4, in_channels))

    def __call__(self, x: mx.array, causal: bool = True, timestep_embed: mx.array | None = None) -> mx.array:
        hidden = self.norm1(x)
        if self.timestep_conditioning:
            if timestep_embed is None:
                raise ValueError("a timestep-conditioned ResnetBlock3D needs timestep_embed")
            batch = x.shape[0]
            # (B, 4·C) -> shift1, scale1, shift2, scale2, each (B, 1, 1, 1, C)
            ada = self.scale_shift_table[None].astype(x.dtype) + timestep_embed.reshape(batch, 4, -1)
            shift1, scale1, shift2, scale2 = (ada[:, i].reshape(batch, 1, 1, 1, -1) for i in range(4))
            hidden = _modulated_silu(hidden, scale1, shift1)
        else:
            hidden = nn.silu(hidden)
        hidden = self.conv1(hidden, causal=causal)
        hidden = self.norm2(hidden)
        if self.timestep_conditioning:
            hidden = _modulated_silu(hidden, scale2, shift2)
        else:
            hidden = nn.silu(hidden)
        hidden = self.conv2(hidden, causal=causal)
        if "conv_shortcut" in self:
            x = self.conv_shortcut(self.norm3(x))
        return x + hidden


class UNetMidBlock3D(nn.Module):
    """`num_layers` ResnetBlock3D sharing one timestep embedding (ltx-core's `res_x` block)."""

    def __init__(
        self,
        in_channels: int,
        num_layers: int,
        norm_layer: str = "pixel_norm",
        timestep_conditioning: bool = False,
        spatial_padding_mode: str = "zeros",
    ):
        super().__init__()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.time_embedder = PixArtAlphaCombinedTimestepSizeEmbeddings(in_channels * 4)
        self.res_blocks = [
            ResnetBlock3D(in_channels, in_channels, norm_layer, timestep_conditioning, spatial_padding_mode)
            for _ in range(num_layers)
        ]

    def __call__(self, x: mx.array, causal: bool = True, timestep: mx.array | None = None) -> mx.array:
        timestep_embed = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("a timestep-conditioned UNetMidBlock3D needs the (scaled) timestep")
            timestep_embed = self.time_embedder(timestep, x.dtype)
        for resnet in self.res_blocks:
            x = resnet(x, causal=causal, timestep_embed=timestep_embed)
        return x

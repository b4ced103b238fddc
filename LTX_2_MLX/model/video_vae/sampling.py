"""Resampling blocks (ltx-core model/video_vae/sampling.py), channels-last."""

import math

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.video_vae.convolution import CausalConv3d
from LTX_2_MLX.model.video_vae.ops import depth_to_space, space_to_depth


@mx.compile
def group_mean(x: mx.array, group: int) -> mx.array:
    """Mean of each run of `group` neighbouring channels, accumulated in float32: one
    element-wise kernel over strided views. As a reduction over a last axis of 2-4 (reshape,
    then mean) it was MLX's slowest kernel of the encode on CUDA (a quarter of its time)."""
    if group == 1:
        return x
    total = x[..., ::group].astype(mx.float32)
    for offset in range(1, group):
        total = total + x[..., offset::group].astype(mx.float32)
    return (total / group).astype(x.dtype)


class SpaceToDepthDownsample(nn.Module):
    """Encoder downsampling: conv to out/stride channels then space-to-depth, plus a
    parameter-free skip (space-to-depth of the input, channel groups averaged)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: tuple[int, int, int],
        spatial_padding_mode: str = "zeros",
    ):
        super().__init__()
        self.stride = tuple(stride)
        self.group_size = in_channels * math.prod(stride) // out_channels
        self.conv = CausalConv3d(
            in_channels, out_channels // math.prod(stride), 3, spatial_padding_mode=spatial_padding_mode
        )

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        if self.stride[0] == 2:
            # The first frame is duplicated so 1 + 2k frames pair up into 1 + k.
            x = mx.concatenate([x[:, :1], x], axis=1)
        skip = space_to_depth(x, self.stride)
        skip = group_mean(skip, self.group_size)
        x = space_to_depth(self.conv(x, causal=causal), self.stride)
        return x + skip


class DepthToSpaceUpsample(nn.Module):
    """Decoder upsampling: conv to stride·in/reduction channels then depth-to-space; with
    `residual`, the input rearranged the same way and tiled over channels is added."""

    def __init__(
        self,
        in_channels: int,
        stride: tuple[int, int, int],
        residual: bool = False,
        out_channels_reduction_factor: int = 1,
        spatial_padding_mode: str = "zeros",
    ):
        super().__init__()
        self.stride = tuple(stride)
        self.residual = residual
        self.out_channels_reduction_factor = out_channels_reduction_factor
        out_channels = math.prod(stride) * in_channels // out_channels_reduction_factor
        self.conv = CausalConv3d(in_channels, out_channels, 3, spatial_padding_mode=spatial_padding_mode)

    def __call__(self, x: mx.array, causal: bool = True) -> mx.array:
        if self.residual:
            skip = depth_to_space(x, self.stride)
            repeats = math.prod(self.stride) // self.out_channels_reduction_factor
            skip = mx.tile(skip, (1, 1, 1, 1, repeats))
            if self.stride[0] == 2:
                skip = skip[:, 1:]
        x = depth_to_space(self.conv(x, causal=causal), self.stride)
        if self.stride[0] == 2:
            # Upsampled latent frame 0 stands for a single video frame: drop its duplicate.
            x = x[:, 1:]
        if self.residual:
            x = x + skip
        return x

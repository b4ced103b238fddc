import mlx.core as mx
import mlx.nn as nn


def conv_nd(dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """The 3x3(x3), padding-1 convolution every upsampler layer uses; channels-last."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return conv(in_channels, out_channels, kernel_size=3, padding=1)


def group_norm(channels: int) -> nn.GroupNorm:
    # pytorch_compatible groups adjacent channels, as torch.nn.GroupNorm does.
    return nn.GroupNorm(32, channels, pytorch_compatible=True)


class ResBlock(nn.Module):
    """conv → GroupNorm → SiLU → conv → GroupNorm, added to the input, then SiLU."""

    def __init__(self, channels: int, mid_channels: int | None = None, dims: int = 3):
        super().__init__()
        mid_channels = channels if mid_channels is None else mid_channels
        self.conv1 = conv_nd(dims, channels, mid_channels)
        self.norm1 = group_norm(mid_channels)
        self.conv2 = conv_nd(dims, mid_channels, channels)
        self.norm2 = group_norm(channels)

    def __call__(self, x: mx.array) -> mx.array:
        residual = x
        x = nn.silu(self.norm1(self.conv1(x)))
        x = self.norm2(self.conv2(x))
        return nn.silu(x + residual)

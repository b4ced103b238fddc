"""2D convolutions padded so that the output at a time step sees no later step."""

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis, pad_spatial


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class CausalConv2d(nn.Module):
    """Conv2d on a channels-last (B, H, W, C) map with asymmetric zero padding.

    The causal axis is padded on its leading side only; the other axis symmetrically.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        causality_axis: CausalityAxis = CausalityAxis.HEIGHT,
    ):
        super().__init__()
        self.causality_axis = causality_axis
        kernel_size = _pair(kernel_size)
        dilation = _pair(dilation)
        pad_h = (kernel_size[0] - 1) * dilation[0]
        pad_w = (kernel_size[1] - 1) * dilation[1]
        # (left, right, top, bottom) as torch's F.pad reads it.
        match causality_axis:
            case CausalityAxis.NONE:
                self.padding = (
                    pad_w // 2,
                    pad_w - pad_w // 2,
                    pad_h // 2,
                    pad_h - pad_h // 2,
                )
            case CausalityAxis.WIDTH | CausalityAxis.WIDTH_COMPATIBILITY:
                self.padding = (pad_w, 0, pad_h // 2, pad_h - pad_h // 2)
            case CausalityAxis.HEIGHT:
                self.padding = (pad_w // 2, pad_w - pad_w // 2, pad_h, 0)
            case _:
                raise ValueError(f"Invalid causality_axis: {causality_axis}")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(pad_spatial(x, self.padding))


def make_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] | None = None,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
    causality_axis: CausalityAxis | None = None,
) -> nn.Module:
    """A CausalConv2d, or (causality_axis=None) a plain Conv2d padded to keep the size."""
    if causality_axis is not None:
        return CausalConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation,
            groups,
            bias,
            causality_axis,
        )
    if padding is None:
        padding = tuple(k // 2 for k in _pair(kernel_size))
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

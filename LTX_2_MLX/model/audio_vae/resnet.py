"""Residual blocks: the VAE's ResnetBlock (2D, channels-last) and HiFi-GAN's ResBlock1 (1D)."""

from functools import partial

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import make_attn
from LTX_2_MLX.model.audio_vae.causal_conv_2d import make_conv2d
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.ops import NormType, build_normalization_layer

LRELU_SLOPE = 0.1


class SameConv1d(nn.Conv1d):
    """Conv1d with torch's padding="same": total (k-1)·dilation, the odd sample on the right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        total = (kernel_size - 1) * dilation
        symmetric = total % 2 == 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=total // 2 if symmetric else 0,
            dilation=dilation,
        )
        self._extra_pad = None if symmetric else (total // 2, total - total // 2)

    def convolve(self, x: mx.array) -> mx.array:
        """The convolution without its bias, for callers that add the bias in a fused kernel."""
        if self._extra_pad is not None:
            x = mx.pad(x, [(0, 0), self._extra_pad, (0, 0)])
        return mx.conv1d(x, self.weight, self.stride, self.padding, self.dilation, self.groups)

    def __call__(self, x: mx.array) -> mx.array:
        return self.convolve(x) + self.bias


# The element-wise steps between the vocoders' convolutions, each one kernel with the bias of the
# convolution before it (nn.Conv1d would add the bias in a kernel of its own).


@partial(mx.compile, shapeless=True)
def bias_leaky_relu(y: mx.array, bias: mx.array) -> mx.array:
    return nn.leaky_relu(y + bias, LRELU_SLOPE)


@partial(mx.compile, shapeless=True)
def add_biased(x: mx.array, y: mx.array, bias: mx.array) -> mx.array:
    """x + (y + bias): a residual connection around a convolution y whose bias is not added yet."""
    return x + (y + bias)


@partial(mx.compile, shapeless=True)
def add_biased_leaky_relu(x: mx.array, y: mx.array, bias: mx.array) -> tuple[mx.array, mx.array]:
    """add_biased, and the leaky ReLU of the sum that the next residual step starts with."""
    x = x + (y + bias)
    return x, nn.leaky_relu(x, LRELU_SLOPE)


class ResBlock1(nn.Module):
    """Three (leaky ReLU, dilated conv, leaky ReLU, conv) residual steps on (B, L, C); four kernels
    a step (two convolutions, two fused element-wise kernels)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.convs1 = [SameConv1d(channels, channels, kernel_size, dilation=d) for d in dilation[:3]]
        self.convs2 = [SameConv1d(channels, channels, kernel_size, dilation=1) for _ in range(3)]

    def __call__(self, x: mx.array) -> mx.array:
        activated = nn.leaky_relu(x, LRELU_SLOPE)
        for step, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            hidden = bias_leaky_relu(conv1.convolve(activated), conv1.bias)
            if step + 1 < len(self.convs2):
                x, activated = add_biased_leaky_relu(x, conv2.convolve(hidden), conv2.bias)
            else:
                x = add_biased(x, conv2.convolve(hidden), conv2.bias)
        return x


class ResnetBlock(nn.Module):
    """norm, SiLU, conv, norm, SiLU, conv plus a (1x1 or 3x3) shortcut when the width changes.

    The VAE has no timestep embedding (temb_channels=0), so there is no temb projection.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.0,
        temb_channels: int = 0,
        norm_type: NormType = NormType.GROUP,
        causality_axis: CausalityAxis = CausalityAxis.HEIGHT,
    ):
        super().__init__()
        if causality_axis != CausalityAxis.NONE and norm_type == NormType.GROUP:
            raise ValueError("Causal ResnetBlock with GroupNorm is not supported; use norm_type 'pixel'.")
        if temb_channels > 0:
            raise ValueError("the audio VAE has no timestep embedding; temb_channels must be 0")
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = build_normalization_layer(in_channels, normtype=norm_type)
        self.conv1 = make_conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            causality_axis=causality_axis,
        )
        self.norm2 = build_normalization_layer(out_channels, normtype=norm_type)
        self.conv2 = make_conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            causality_axis=causality_axis,
        )
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = make_conv2d(
                    in_channels,
                    out_channels,
                    3,
                    stride=1,
                    causality_axis=causality_axis,
                )
            else:
                self.nin_shortcut = make_conv2d(
                    in_channels,
                    out_channels,
                    1,
                    stride=1,
                    causality_axis=causality_axis,
                )

    def __call__(self, x: mx.array) -> mx.array:
        h = self.conv1(nn.silu(self.norm1(x)))
        h = self.conv2(nn.silu(self.norm2(h)))  # dropout is the identity at inference
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class ResolutionLevel(nn.Module):
    """Residual blocks at one resolution of the encoder or decoder, each followed by attention
    when this resolution has it, then the level's resampler if any.

    Keys: `block.<i>`, `attn.<i>` and the resampler under its checkpoint name
    (`downsample` / `upsample`).
    """

    def __init__(
        self, channels_in: int, channels_out: int, num_blocks: int, with_attention: bool, block_options: dict,
        attention_options: dict, resampler_name: str, resampler: nn.Module | None,
    ):  # fmt: skip
        super().__init__()
        widths = [channels_in] + [channels_out] * (num_blocks - 1)
        self.block = [ResnetBlock(in_channels=w, out_channels=channels_out, **block_options) for w in widths]
        self.attn = [make_attn(channels_out, **attention_options) for _ in widths] if with_attention else []
        self.resampler_name = resampler_name
        if resampler is not None:
            self[resampler_name] = resampler

    def __call__(self, h: mx.array) -> mx.array:
        for index, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[index](h)
        return self[self.resampler_name](h) if self.resampler_name in self else h

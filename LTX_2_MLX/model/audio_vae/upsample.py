import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import AttentionType
from LTX_2_MLX.model.audio_vae.causal_conv_2d import make_conv2d
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.ops import NormType
from LTX_2_MLX.model.audio_vae.resnet import ResolutionLevel


class Upsample(nn.Module):
    """Nearest 2x in time and mel, then a causal 3x3 conv.

    After the causal conv the first step along the causal axis is dropped: its window saw only
    padding and one input step, like the second, so dropping it undoes the encoder's padding and
    keeps lengths of the form 1 + 2n.
    """

    def __init__(
        self,
        in_channels: int,
        with_conv: bool,
        causality_axis: CausalityAxis = CausalityAxis.HEIGHT,
    ):
        super().__init__()
        self.with_conv = with_conv
        self.causality_axis = causality_axis
        if with_conv:
            self.conv = make_conv2d(
                in_channels,
                in_channels,
                kernel_size=3,
                stride=1,
                causality_axis=causality_axis,
            )

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape
        x = mx.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        if self.with_conv:
            x = self.conv(x)
            match self.causality_axis:
                case CausalityAxis.HEIGHT:
                    x = x[:, 1:]
                case CausalityAxis.WIDTH:
                    x = x[:, :, 1:]
                case CausalityAxis.NONE | CausalityAxis.WIDTH_COMPATIBILITY:
                    pass
                case _:
                    raise ValueError(f"Invalid causality_axis: {self.causality_axis}")
        return x


def build_upsampling_path(
    *, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, resolution: int, norm_type: NormType,
    causality_axis: CausalityAxis, attn_type: AttentionType, attn_resolutions: set[int], resamp_with_conv: bool,
    initial_block_channels: int, dropout: float = 0.0,
) -> tuple[list[ResolutionLevel], int]:  # fmt: skip
    """The decoder's levels indexed as the encoder's (0 = finest) but run coarsest first: level
    i narrows to ch * ch_mult[i] with one block more than the encoder and, except level 0,
    doubles the resolution at its end. Returns them and the final width."""
    block_options = dict(temb_channels=0, dropout=dropout, norm_type=norm_type, causality_axis=causality_axis)
    attention_options = dict(attn_type=attn_type, norm_type=norm_type)
    levels: list = [None] * len(ch_mult)
    width, size = initial_block_channels, resolution // 2 ** (len(ch_mult) - 1)
    for index in reversed(range(len(ch_mult))):
        out = ch * ch_mult[index]
        resampler = Upsample(out, resamp_with_conv, causality_axis=causality_axis) if index else None
        levels[index] = ResolutionLevel(
            width, out, num_res_blocks + 1, size in attn_resolutions, block_options, attention_options, "upsample",
            resampler,
        )  # fmt: skip
        width, size = out, size * 2
    return levels, width

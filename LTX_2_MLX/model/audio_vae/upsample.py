import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import AttentionType, make_attn
from LTX_2_MLX.model.audio_vae.causal_conv_2d import make_conv2d
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.ops import NormType
from LTX_2_MLX.model.audio_vae.resnet import ResnetBlock


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


class UpStage(nn.Module):
    """One resolution level of the decoder: residual blocks (+ attention), then an Upsample."""

    def __init__(self, block: list, attn: list, upsample: Upsample | None):
        super().__init__()
        self.block = block
        self.attn = attn
        if upsample is not None:
            self.upsample = upsample


def build_upsampling_path(
    *,
    ch: int,
    ch_mult: tuple[int, ...],
    num_resolutions: int,
    num_res_blocks: int,
    resolution: int,
    temb_channels: int,
    dropout: float,
    norm_type: NormType,
    causality_axis: CausalityAxis,
    attn_type: AttentionType,
    attn_resolutions: set[int],
    resamp_with_conv: bool,
    initial_block_channels: int,
) -> tuple[list[UpStage], int]:
    """Stages indexed by level (0 = finest), built coarsest first as ltx-core does."""
    stages = [None] * num_resolutions
    block_in = initial_block_channels
    curr_res = resolution // (2 ** (num_resolutions - 1))
    for level in reversed(range(num_resolutions)):
        block, attn = [], []
        block_out = ch * ch_mult[level]
        for _ in range(num_res_blocks + 1):
            block.append(
                ResnetBlock(
                    in_channels=block_in,
                    out_channels=block_out,
                    temb_channels=temb_channels,
                    dropout=dropout,
                    norm_type=norm_type,
                    causality_axis=causality_axis,
                )
            )
            block_in = block_out
            if curr_res in attn_resolutions:
                attn.append(make_attn(block_in, attn_type=attn_type, norm_type=norm_type))
        upsample = None
        if level != 0:
            upsample = Upsample(block_in, resamp_with_conv, causality_axis=causality_axis)
            curr_res *= 2
        stages[level] = UpStage(block, attn, upsample)
    return stages, block_in

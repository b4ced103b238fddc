import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import AttentionType, make_attn
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis, pad_spatial
from LTX_2_MLX.model.audio_vae.ops import NormType
from LTX_2_MLX.model.audio_vae.resnet import ResnetBlock

# (left, right, top, bottom) zero padding before the 3x3 stride-2 convolution.
_DOWNSAMPLE_PADDING = {
    CausalityAxis.NONE: (0, 1, 0, 1),
    CausalityAxis.WIDTH: (2, 0, 0, 1),
    CausalityAxis.HEIGHT: (0, 1, 2, 0),
    CausalityAxis.WIDTH_COMPATIBILITY: (1, 0, 0, 1),
}


class Downsample(nn.Module):
    """Halve time and mel resolution: a padded 3x3 stride-2 conv, or 2x2 average pooling."""

    def __init__(
        self,
        in_channels: int,
        with_conv: bool,
        causality_axis: CausalityAxis = CausalityAxis.WIDTH,
    ):
        super().__init__()
        self.with_conv = with_conv
        self.causality_axis = causality_axis
        if causality_axis != CausalityAxis.NONE and not with_conv:
            raise ValueError("causality is only supported when `with_conv=True`.")
        if causality_axis not in _DOWNSAMPLE_PADDING:
            raise ValueError(f"Invalid causality_axis: {causality_axis}")
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def __call__(self, x: mx.array) -> mx.array:
        if self.with_conv:
            return self.conv(pad_spatial(x, _DOWNSAMPLE_PADDING[self.causality_axis]))
        b, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2]
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class DownStage(nn.Module):
    """One resolution level of the encoder: residual blocks (+ attention), then a Downsample."""

    def __init__(self, block: list, attn: list, downsample: Downsample | None):
        super().__init__()
        self.block = block
        self.attn = attn
        if downsample is not None:
            self.downsample = downsample


def build_downsampling_path(
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
) -> tuple[list[DownStage], int]:
    stages = []
    curr_res = resolution
    in_ch_mult = (1, *ch_mult)
    block_in = ch
    for i_level in range(num_resolutions):
        block, attn = [], []
        block_in = ch * in_ch_mult[i_level]
        block_out = ch * ch_mult[i_level]
        for _ in range(num_res_blocks):
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
        downsample = None
        if i_level != num_resolutions - 1:
            downsample = Downsample(block_in, resamp_with_conv, causality_axis=causality_axis)
            curr_res = curr_res // 2
        stages.append(DownStage(block, attn, downsample))
    return stages, block_in

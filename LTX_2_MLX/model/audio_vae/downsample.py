import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import AttentionType
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis, pad_spatial
from LTX_2_MLX.model.audio_vae.ops import NormType
from LTX_2_MLX.model.audio_vae.resnet import ResolutionLevel

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


def build_downsampling_path(
    *, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, resolution: int, norm_type: NormType,
    causality_axis: CausalityAxis, attn_type: AttentionType, attn_resolutions: set[int], resamp_with_conv: bool,
    dropout: float = 0.0,
) -> tuple[list[ResolutionLevel], int]:  # fmt: skip
    """The encoder's levels, finest first: level i widens to ch * ch_mult[i] and, except the
    last, halves the resolution at its end. Returns them and the final width."""
    block_options = dict(temb_channels=0, dropout=dropout, norm_type=norm_type, causality_axis=causality_axis)
    attention_options = dict(attn_type=attn_type, norm_type=norm_type)
    levels, width, size = [], ch, resolution
    for index, multiplier in enumerate(ch_mult):
        is_last = index == len(ch_mult) - 1
        resampler = None if is_last else Downsample(ch * multiplier, resamp_with_conv, causality_axis=causality_axis)
        levels.append(
            ResolutionLevel(width, ch * multiplier, num_res_blocks, size in attn_resolutions, block_options,
                            attention_options, "downsample", resampler)  # fmt: skip
        )
        width, size = ch * multiplier, size if is_last else size // 2
    return levels, width

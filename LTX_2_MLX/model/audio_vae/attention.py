from enum import Enum

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.ops import NormType, build_normalization_layer


class AttentionType(Enum):
    VANILLA = "vanilla"
    LINEAR = "linear"
    NONE = "none"


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions, with a residual."""

    def __init__(self, in_channels: int, norm_type: NormType = NormType.GROUP):
        super().__init__()
        self.in_channels = in_channels
        self.norm = build_normalization_layer(in_channels, normtype=norm_type)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, h * w, c) for proj in (self.q, self.k, self.v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=c**-0.5)
        return x + self.proj_out(out.reshape(b, h, w, c))


def make_attn(
    in_channels: int,
    attn_type: AttentionType = AttentionType.VANILLA,
    norm_type: NormType = NormType.GROUP,
):
    match attn_type:
        case AttentionType.VANILLA:
            return AttnBlock(in_channels, norm_type=norm_type)
        case AttentionType.NONE:
            return nn.Identity()
        case AttentionType.LINEAR:
            raise NotImplementedError(f"Attention type {attn_type.value} is not supported yet.")
        case _:
            raise ValueError(f"Unknown attention type: {attn_type}")

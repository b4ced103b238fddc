"""Small building blocks of the DiT: timestep AdaLN, feed-forward, caption projection."""

import math

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.common.timestep_embedding import PixArtAlphaCombinedTimestepSizeEmbeddings

# AdaLN values per block: shift/scale/gate for self-attention and for the feed-forward,
# plus shift/scale/gate for the text cross-attention when it is modulated too (LTX-2.3).
ADALN_NUM_BASE_PARAMS = 6
ADALN_NUM_CROSS_ATTN_PARAMS = 3


def adaln_embedding_coefficient(cross_attention_adaln: bool) -> int:
    return ADALN_NUM_BASE_PARAMS + (ADALN_NUM_CROSS_ATTN_PARAMS if cross_attention_adaln else 0)


class AdaLayerNormSingle(nn.Module):
    """Timestep -> `coefficient` modulation vectors per token, plus the embedding itself."""

    def __init__(self, embedding_dim: int, embedding_coefficient: int = 6):
        super().__init__()
        self.emb = PixArtAlphaCombinedTimestepSizeEmbeddings(embedding_dim)
        self.linear = nn.Linear(embedding_dim, embedding_coefficient * embedding_dim)

    def __call__(self, timesteps: mx.array, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        embedded = self.emb(timesteps, dtype)
        return self.linear(nn.silu(embedded)), embedded


@mx.compile
def gelu_tanh(x: mx.array) -> mx.array:
    """GELU's tanh approximation in float32, rounded once to x's dtype, as torch's kernel
    computes it (x³ as x·x·x). One fused kernel per shape: nn.gelu_approx (shapeless) is
    split in two around x**3 and rounds every step in bf16; a shapeless compile of this
    expression is split in three by its broadcast constants."""
    x32 = x.astype(mx.float32)
    inner = math.sqrt(2 / math.pi) * (x32 + 0.044715 * (x32 * x32 * x32))
    return (0.5 * x32 * (1 + mx.tanh(inner))).astype(x.dtype)


class GELUApprox(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def __call__(self, x: mx.array) -> mx.array:
        return gelu_tanh(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, dim_out: int, mult: int = 4):
        super().__init__()
        # Index 1 is a parameterless Identity in the reference; keeping the slot keeps its keys.
        self.net = [GELUApprox(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim_out)]

    def __call__(self, x: mx.array) -> mx.array:
        return self.net[2](self.net[0](x))


class PixArtAlphaTextProjection(nn.Module):
    """Caption features -> model width (LTX-2.0 keeps this inside the DiT)."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def __call__(self, caption: mx.array) -> mx.array:
        return self.linear_2(gelu_tanh(self.linear_1(caption)))

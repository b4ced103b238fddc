"""Timestep embedding shared by the DiT's AdaLN and the VAE decoder's conditioning: ltx-core's
PixArtAlphaCombinedTimestepSizeEmbeddings (sinusoidal projection to 256 features, then
Linear-SiLU-Linear)."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np


def timestep_sinusoids(timesteps: mx.array, dim: int = 256, max_period: float = 10000.0) -> mx.array:
    """(N,) -> (N, dim) as [cos, sin] of t·exp(-ln(max_period)·i/half), i < half (float32)."""
    half = dim // 2
    # The exponent is rounded to float32 as the reference rounds it, then exponentiated
    # exactly: a 1-ulp error in a frequency becomes ~1e-5 in an angle of several hundred
    # radians (timesteps are scaled by 1000), which MLX's float32 exp would cause.
    exponent = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half)
    frequencies = mx.array(np.exp(exponent.astype(np.float64)).astype(np.float32))
    angles = timesteps.astype(mx.float32)[:, None] * frequencies[None]
    embedding = mx.concatenate([mx.cos(angles), mx.sin(angles)], axis=-1)
    if dim % 2:
        embedding = mx.pad(embedding, [(0, 0), (0, 1)])
    return embedding


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(nn.silu(self.linear_1(x)))


class PixArtAlphaCombinedTimestepSizeEmbeddings(nn.Module):
    """Keys: `timestep_embedder.linear_{1,2}.{weight,bias}`."""

    PROJECTION_DIM = 256

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(self.PROJECTION_DIM, embedding_dim)

    def __call__(self, timestep: mx.array, dtype: mx.Dtype) -> mx.array:
        projected = timestep_sinusoids(timestep.reshape(-1), self.PROJECTION_DIM)
        return self.timestep_embedder(projected.astype(dtype))

"""Rotary position embeddings over fractional (time, height, width) coordinates."""

import math
from enum import Enum
from functools import lru_cache

import mlx.core as mx
import numpy as np


class LTXRopeType(Enum):
    INTERLEAVED = "interleaved"
    SPLIT = "split"


@lru_cache(maxsize=8)
def frequency_grid(theta: float, num_position_dims: int, dim: int, double_precision: bool) -> np.ndarray:
    """theta ** linspace(0, 1, n) * pi/2, the base angular frequencies, as float32.

    The float64 grid is computed in float64 and rounded once (frequencies_precision="float64"
    in real checkpoints). The float32 grid follows PyTorch's CPU arithmetic: a linspace whose
    elements are each one fused multiply-add from the nearer end, then float32 pow and
    scaling. Both grids reach ~15708 rad, where one float32 ulp is 1e-3 rad, so the
    difference between them is visible in the output.
    """
    steps = dim // (2 * num_position_dims)
    start, end = math.log(1, theta), math.log(theta, theta)
    if double_precision:
        exponents = np.linspace(start, end, steps, dtype=np.float64)
        return (np.power(theta, exponents) * math.pi / 2).astype(np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float32((end32 - start32) / np.float32(max(steps - 1, 1)))
    index = np.arange(steps, dtype=np.float64)
    from_start = np.float64(start32) + np.float64(step) * index
    from_end = np.float64(end32) - np.float64(step) * (steps - 1 - index)
    exponents = np.where(index < steps // 2, from_start, from_end).astype(np.float32)
    grid = np.power(np.float32(theta), exponents).astype(np.float32)
    return (grid * np.float32(math.pi) / np.float32(2)).astype(np.float32)


def position_angles(positions: mx.array, grid: mx.array, max_pos: list[int], use_middle_indices_grid: bool) -> mx.array:
    """Angles (B, T, F * n_dims) for positions (B, n_dims, T, 2) of [start, end) intervals."""
    if positions.ndim == 4:
        positions = (positions[..., 0] + positions[..., 1]) / 2.0 if use_middle_indices_grid else positions[..., 0]
    if positions.shape[1] != len(max_pos):
        raise ValueError(f"positions have {positions.shape[1]} coordinate axes but max_pos has {len(max_pos)}")
    scale = mx.array(max_pos, dtype=positions.dtype).reshape(1, -1, 1)
    fractional = (positions / scale).transpose(0, 2, 1)  # (B, T, n_dims)
    angles = grid * (fractional[..., None] * 2 - 1)  # (B, T, n_dims, F)
    batch, tokens = angles.shape[:2]
    return angles.swapaxes(-1, -2).reshape(batch, tokens, -1)


def precompute_freqs_cis(
    positions: mx.array,
    dim: int,
    out_dtype: mx.Dtype,
    theta: float,
    max_pos: list[int],
    use_middle_indices_grid: bool,
    num_attention_heads: int,
    rope_type: LTXRopeType,
    double_precision: bool,
) -> tuple[mx.array, mx.array]:
    """cos and sin tables for `dim`-wide projections.

    INTERLEAVED: (B, T, dim), each frequency repeated for its pair of channels.
    SPLIT: (B, T, heads, dim / heads / 2), the halves of each head rotate together.
    Channels with no frequency (dim not divisible by the grid) are padded at the front with
    the identity rotation.
    """
    num_dims = positions.shape[1]
    grid = mx.array(frequency_grid(float(theta), num_dims, dim, double_precision))
    angles = position_angles(positions.astype(mx.float32), grid, max_pos, use_middle_indices_grid)
    cos, sin = mx.cos(angles), mx.sin(angles)
    batch, tokens = angles.shape[:2]
    if rope_type == LTXRopeType.SPLIT:
        pad = dim // 2 - angles.shape[-1]
        if pad:
            cos = mx.concatenate([mx.ones((batch, tokens, pad), cos.dtype), cos], axis=-1)
            sin = mx.concatenate([mx.zeros((batch, tokens, pad), sin.dtype), sin], axis=-1)
        cos = cos.reshape(batch, tokens, num_attention_heads, -1)
        sin = sin.reshape(batch, tokens, num_attention_heads, -1)
    else:
        cos, sin = mx.repeat(cos, 2, axis=-1), mx.repeat(sin, 2, axis=-1)
        pad = dim % (2 * num_dims)
        if pad:
            cos = mx.concatenate([mx.ones((batch, tokens, pad), cos.dtype), cos], axis=-1)
            sin = mx.concatenate([mx.zeros((batch, tokens, pad), sin.dtype), sin], axis=-1)
    return cos.astype(out_dtype), sin.astype(out_dtype)


# Each rotation is one fused element-wise kernel: the partner of every channel is read
# through a reversed view (no stack or concatenate), and the sign of its sine term comes from
# a constant (-1, +1) pair. x*cos + partner*(sin*sign) rounds exactly as x*cos -/+ partner*sin.
# (A vectorised mx.fast.cuda_kernel saved 0.03 s per 1216x704x121 forward on an H200, but MLX
# compiles custom kernels again in every process, 1-2 s each: more than a generation gains.)
@lru_cache(maxsize=4)
def _pair_sign(dtype: mx.Dtype) -> mx.array:
    return mx.array([[-1.0], [1.0]], dtype=dtype)


@mx.compile
def _rotate_pairs(pairs: mx.array, cos: mx.array, sin: mx.array, sign: mx.array) -> mx.array:
    return pairs * cos + pairs[..., ::-1, :] * (sin * sign)


def apply_rotary_emb(x: mx.array, freqs_cis: tuple[mx.array, mx.array], rope_type: LTXRopeType) -> mx.array:
    """Rotate projections x (B, T, H*D) by the tables from precompute_freqs_cis."""
    cos, sin = freqs_cis
    sign = _pair_sign(sin.dtype)
    if rope_type == LTXRopeType.INTERLEAVED:
        # Channels (2i, 2i+1) rotate together: pairs (..., n, 2, 1), the tables repeat each
        # frequency for both channels of its pair.
        pairs = x.reshape(*x.shape[:-1], -1, 2, 1)
        table_shape = (*cos.shape[:-1], -1, 2, 1)
        rotated = _rotate_pairs(pairs, cos.reshape(table_shape), sin.reshape(table_shape), sign)
        return rotated.reshape(x.shape)
    # SPLIT: the halves of each head rotate together: pairs (B*T*H, 2, D/2). Three dimensions
    # rather than five: MLX's fused kernel indexes strided inputs (the reversed view) per
    # dimension; on an H200 a 6,144-token video rotation took 76 us against 104 (3.2x faster
    # for the audio's 126 tokens), on the CPU 1.5x faster.
    batch, tokens, heads = cos.shape[:3]
    rows = batch * tokens * heads
    pairs = x.reshape(rows, 2, -1)
    rotated = _rotate_pairs(pairs, cos.reshape(rows, 1, -1), sin.reshape(rows, 1, -1), sign)
    return rotated.reshape(batch, tokens, -1)

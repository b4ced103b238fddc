"""Rotary position embeddings over fractional (time, height, width) coordinates."""

import math
from enum import Enum
from functools import lru_cache

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from LTX_2_MLX.model.common import cuda_kernels


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
@lru_cache(maxsize=4)
def _pair_sign(dtype: mx.Dtype) -> mx.array:
    return mx.array([[-1.0], [1.0]], dtype=dtype)


@mx.compile
def _rotate_pairs(pairs: mx.array, cos: mx.array, sin: mx.array, sign: mx.array) -> mx.array:
    """INTERLEAVED, as ltx-core: both products rounded, then their sum."""
    return pairs * cos + pairs[..., ::-1, :] * (sin * sign)


@mx.compile
def _rotate_halves(pairs: mx.array, cos: mx.array, sin: mx.array, sign: mx.array) -> mx.array:
    """SPLIT, as ltx-core's x*cos then addcmul_: the sine product is added unrounded (in
    float32, one rounding at the end), so bf16 results equal the reference's bit for bit."""
    partner = pairs[..., ::-1, :].astype(mx.float32) * (sin * sign).astype(mx.float32)
    return (pairs * cos + partner).astype(pairs.dtype)


# CUDA, bf16, SPLIT: MLX's fused kernel reads the reversed view element by element through its
# strides; these read 16-byte vectors (8 channels) of both halves of a head and of the tables.
# `rotate` rounds as ltx-core's apply_split_rotary_emb does (x*cos, then addcmul_ adds
# -/+sin*partner with one rounding), so the rotation alone is bitwise equal to the reference's
# on the same inputs, as the portable path is on the CPU (tests); on an H200 MLX's fused kernel
# for the earlier portable expression differed from the reference in 31% of values. The
# normalising variant also does the q/k RMS norm
# (w * bf16(x * rsqrt(mean(x^2) + eps)), as mx.fast.rms_norm) in the same pass, one block per
# token: the normalised projection is never written out and read back. Its sum of squares is
# added in another order than the reference's (whose nn.RMSNorm may also round otherwise): 28%
# of the values differ from ltx-core's RMSNorm + rotation (the portable path: 46%). On an H200,
# 6,144 x 4,096: rotation 62 us against 82, norm + rotation 63 us against 106
# (benchmarks/results/h200-2026-11-29g/rope_kernels_check.txt).
_ROTATE_SOURCE = (
    cuda_kernels.BF16_HELPERS
    + r"""
// x*cos, then -/+ sin*partner in one rounding: ltx-core's product, then addcmul_.
__device__ __forceinline__ void rotate(bf16x2 a, bf16x2 b, bf16x2 c, bf16x2 s, bf16x2& out_a, bf16x2& out_b) {
  out_a = fma2(neg2(s), b, mul2(a, c));
  out_b = fma2(s, a, mul2(b, c));
}

__device__ __forceinline__ void rotate_vectors(uint4 a, uint4 b, uint4 c, uint4 s, uint4* out, int first, int half) {
  uint4 out_a, out_b;
  rotate(a.x, b.x, c.x, s.x, out_a.x, out_b.x);
  rotate(a.y, b.y, c.y, s.y, out_a.y, out_b.y);
  rotate(a.z, b.z, c.z, s.z, out_a.z, out_b.z);
  rotate(a.w, b.w, c.w, s.w, out_a.w, out_b.w);
  out[first] = out_a;
  out[first + half] = out_b;
}

// One thread per 8 channels of a head's first half; half = vectors per half-head.
extern "C" __global__ void ltx_rope_split_bf16(const uint4* x, const uint4* cos_table, const uint4* sin_table,
                                               uint4* out, int vectors, int half, int table_vectors) {
  int v = blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= vectors) return;
  int first = v + (v / half) * half;
  int table = v % table_vectors;
  rotate_vectors(x[first], x[first + half], cos_table[table], sin_table[table], out, first, half);
}

__device__ __forceinline__ bf16x2 normalise(bf16x2 x, bf16x2 w, float inv) { return mul2(w, scale2(x, inv)); }

__device__ __forceinline__ uint4 normalise_vector(uint4 x, uint4 w, float inv) {
  return make_uint4(normalise(x.x, w.x, inv), normalise(x.y, w.y, inv), normalise(x.z, w.z, inv),
                    normalise(x.w, w.w, inv));
}

// One block per token row (blockDim = heads * half, a multiple of 32), one thread per 8
// channels of a head's first half and the matching 8 of its second half.
extern "C" __global__ void ltx_norm_rope_split_bf16(const uint4* x, const uint4* weight, const uint4* cos_table,
                                                    const uint4* sin_table, uint4* out, int half, int table_rows,
                                                    int eps_bits) {
  int t = threadIdx.x, row = blockIdx.x;
  int first = t + (t / half) * half;
  const uint4* x_row = x + (size_t)row * 2 * blockDim.x;
  int table = (row % table_rows) * blockDim.x + t;
  uint4 a = x_row[first], b = x_row[first + half], c = cos_table[table], s = sin_table[table];
  uint4 weight_a = weight[first], weight_b = weight[first + half];
  float inv = rsqrtf(block_sum(squares(a) + squares(b)) / (float)(blockDim.x * 16) + __int_as_float(eps_bits));
  rotate_vectors(normalise_vector(a, weight_a, inv), normalise_vector(b, weight_b, inv), c, s,
                 out + (size_t)row * 2 * blockDim.x, first, half);
}
"""
)


def _split_kernel_shapes(x: mx.array, cos: mx.array, sin: mx.array) -> tuple[int, int] | None:
    """(rows of the tables, vectors per half-head) where the CUDA kernels apply, else None."""
    if not (x.dtype == cos.dtype == sin.dtype == mx.bfloat16) or x.ndim != 3 or cos.ndim != 4:
        return None
    table_batch, tokens, heads, half = cos.shape
    if x.shape[1:] != (tokens, 2 * heads * half) or table_batch not in (1, x.shape[0]) or sin.shape != cos.shape:
        return None
    if half % 8 or x.size >= 2**31:
        return None
    return table_batch * tokens, half // 8


def _rotate_split_cuda(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array | None:
    shapes = _split_kernel_shapes(x, cos, sin)
    run = cuda_kernels.kernel("ltx_rope_split_bf16", _ROTATE_SOURCE) if shapes else None
    if run is None:
        return None
    table_rows, half = shapes
    vectors = x.size // 16
    (rotated,) = run([x, cos, sin], [x.shape], [x.dtype], [vectors, half, table_rows * cos.shape[2] * half], vectors)
    return rotated


def _norm_rotate_split_cuda(x: mx.array, norm: nn.RMSNorm, cos: mx.array, sin: mx.array) -> mx.array | None:
    shapes = _split_kernel_shapes(x, cos, sin)
    if shapes is None or norm.weight.dtype != mx.bfloat16 or norm.weight.shape != (x.shape[-1],):
        return None
    table_rows, half = shapes
    threads_per_row = x.shape[-1] // 16
    if threads_per_row % 32 or threads_per_row > 1024:
        return None
    run = cuda_kernels.kernel("ltx_norm_rope_split_bf16", _ROTATE_SOURCE)
    if run is None:
        return None
    rows = x.size // x.shape[-1]
    (rotated,) = run(
        [x, norm.weight, cos, sin], [x.shape], [x.dtype], [half, table_rows, cuda_kernels.float_bits(norm.eps)],
        rows * threads_per_row, threads_per_row,
    )  # fmt: skip
    return rotated


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
    if cuda_kernels.enabled():
        rotated = _rotate_split_cuda(x, cos, sin)
        if rotated is not None:
            return rotated
    # SPLIT: the halves of each head rotate together: pairs (B*T*H, 2, D/2). Three dimensions
    # rather than five: MLX's fused kernel indexes strided inputs (the reversed view) per
    # dimension; on an H200 a 6,144-token video rotation took 76 us against 104 (3.2x faster
    # for the audio's 126 tokens), on the CPU 1.5x faster.
    batch, tokens, heads = cos.shape[:3]
    rows = batch * tokens * heads
    pairs = x.reshape(rows, 2, -1)
    rotated = _rotate_halves(pairs, cos.reshape(rows, 1, -1), sin.reshape(rows, 1, -1), sign)
    return rotated.reshape(batch, tokens, -1)


def normed_rotary_emb(
    x: mx.array, norm: nn.Module, freqs_cis: tuple[mx.array, mx.array], rope_type: LTXRopeType
) -> mx.array:
    """apply_rotary_emb(norm(x), ...): on CUDA, for bf16 SPLIT rotations after a plain
    nn.RMSNorm, one kernel for both."""
    if rope_type == LTXRopeType.SPLIT and type(norm) is nn.RMSNorm and cuda_kernels.enabled():
        rotated = _norm_rotate_split_cuda(x, norm, *freqs_cis)
        if rotated is not None:
            return rotated
    return apply_rotary_emb(norm(x), freqs_cis, rope_type)

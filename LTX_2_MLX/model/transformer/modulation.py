"""The blocks' AdaLN element-wise steps: x * (1 + scale) + shift and x + update * gate.

An AdaLN value is a row of a block's table plus the matching slice of the timestep embedding.
The sum is taken inside the kernel that uses it, so no (B, T, n, dim) tensor of values is
written and read back; every operation rounds to the stream's dtype as ltx-core's unfused
expressions do (row + timestep, 1 + scale, the product, the sum).

On CUDA in bf16 they run as precompiled kernels (`cuda_kernels`) on 16-byte vectors, bitwise
equal to ltx-core's expressions on the same inputs (MLX's fused kernels round differently: 27%
of a modulation's values differ from the reference's); a norm followed by a modulation is one
kernel (`Normed`). On an H200, 13,376 x 4,096: modulation 84 us against MLX's 185, norm +
modulation 95 against 242, gated residual 99 against 140
(benchmarks/results/h200-2026-11-29g/modulation_kernels_check.txt). Elsewhere they are
`mx.compile`d expressions with the same roundings."""

from dataclasses import dataclass
from functools import lru_cache

import mlx.core as mx

from LTX_2_MLX.model.common import cuda_kernels


@dataclass(frozen=True)
class AdaValue:
    """Row `index` of `table` (n, dim) plus slice `index` of `timestep` (B, T or 1, n * dim)."""

    table: mx.array
    timestep: mx.array
    index: int

    def parts(self) -> tuple[mx.array, mx.array]:
        """The table row (1, dim), as a view, and the timestep slice (B, T or 1, dim)."""
        batch, tokens = self.timestep.shape[:2]
        per_row = self.timestep.reshape(batch, tokens, self.table.shape[0], -1)
        # table[i : i + 1] is a view; table[i] would be a gather kernel per value.
        return self.table[self.index : self.index + 1].astype(self.timestep.dtype), per_row[:, :, self.index]


def ada_values(table: mx.array, timestep: mx.array, start: int, stop: int) -> list[AdaValue]:
    """Rows start:stop of a block's table, each with the matching slice of the AdaLN output."""
    return [AdaValue(table, timestep, index) for index in range(start, stop)]


@mx.compile
def _modulate_kernel(
    x: mx.array, scale_row: mx.array, scale_t: mx.array, shift_row: mx.array, shift_t: mx.array
) -> mx.array:
    return x * (1 + (scale_row + scale_t)) + (shift_row + shift_t)


@mx.compile
def _gated_residual_kernel(x: mx.array, update: mx.array, gate_row: mx.array, gate_t: mx.array) -> mx.array:
    return x + update * (gate_row + gate_t)


def modulate(x: mx.array, scale: AdaValue, shift: AdaValue) -> mx.array:
    """x * (1 + scale) + shift."""
    if cuda_kernels.enabled() and scale.table is shift.table and scale.timestep is shift.timestep:
        out = _run_cuda("ltx_modulate_bf16", [x], scale, [scale.index, shift.index])
        if out is not None:
            return out
    return _modulate_kernel(x, *scale.parts(), *shift.parts())


@lru_cache(maxsize=8)
def _ones(width: int, dtype: mx.Dtype) -> mx.array:
    """Weight of the blocks' plain RMS norms. Exact, and on CUDA faster than no weight: MLX's
    weightless rms_norm takes its unaligned path (44 against 36 us per 6144x4096 norm, H200)."""
    return mx.ones((width,), dtype)


def rms_norm(x: mx.array, eps: float) -> mx.array:
    """x / RMS(x) over the last axis (no learned weight)."""
    return mx.fast.rms_norm(x, _ones(x.shape[-1], x.dtype), eps)


class Normed:
    """rms_norm(x) to be modulated, once or more. On CUDA each modulation normalises x in the
    same pass (the normalised row is not written out and read back; its sum of squares is
    added in another order than the unfused norm's); elsewhere the norm is computed once."""

    def __init__(self, x: mx.array, eps: float):
        self.x, self.eps, self._normed = x, eps, None

    def modulated(self, scale: AdaValue, shift: AdaValue) -> mx.array:
        """rms_norm(x) * (1 + scale) + shift."""
        if cuda_kernels.enabled() and scale.table is shift.table and scale.timestep is shift.timestep:
            width = self.x.shape[-1] // 8
            if width % 32 == 0 and width <= 1024:
                indices = [scale.index, shift.index, cuda_kernels.float_bits(self.eps)]
                out = _run_cuda("ltx_norm_modulate_bf16", [self.x], scale, indices, threads_per_block=width)
                if out is not None:
                    return out
        if self._normed is None:
            self._normed = rms_norm(self.x, self.eps)
        return modulate(self._normed, scale, shift)


def gated_residual(x: mx.array, update: mx.array, gate: AdaValue) -> mx.array:
    """x + update * gate."""
    if cuda_kernels.enabled() and update.shape == x.shape and update.dtype == x.dtype:
        out = _run_cuda("ltx_gated_residual_bf16", [x, update], gate, [gate.index, gate.index])
        if out is not None:
            return out
    return _gated_residual_kernel(x, update, *gate.parts())


# One thread per 8 channels of a token; each AdaLN value is row + timestep slice, rounded.
_SOURCE = (
    cuda_kernels.BF16_HELPERS
    + r"""
struct Values {
  const uint4* table; const uint4* timestep; size_t timestep_row; int dim;
  __device__ __forceinline__ uint4 row(int index, int c) const { return table[index * dim + c]; }
  __device__ __forceinline__ uint4 slice(int index, int c) const { return timestep[timestep_row + index * dim + c]; }
};

__device__ __forceinline__ Values values(const uint4* table, const uint4* timestep, int v, int dim, int tokens,
                                         int t_tokens, int n, int* c) {
  int row = v / dim;
  *c = v - row * dim;
  int batch = row / tokens;
  size_t t_row = (size_t)batch * t_tokens + (t_tokens == 1 ? 0 : row - batch * tokens);
  return Values{table, timestep, t_row * n * dim, dim};
}

__device__ __forceinline__ bf16x2 modulate2(bf16x2 x, bf16x2 sr, bf16x2 st, bf16x2 hr, bf16x2 ht) {
  return add2(mul2(x, add2(0x3f803f80u, add2(sr, st))), add2(hr, ht));
}

__device__ __forceinline__ bf16x2 gate2(bf16x2 x, bf16x2 u, bf16x2 gr, bf16x2 gt) {
  return add2(x, mul2(u, add2(gr, gt)));
}

extern "C" __global__ void ltx_modulate_bf16(const uint4* x, const uint4* table, const uint4* timestep, uint4* out,
                                             int vectors, int dim, int tokens, int t_tokens, int n, int scale_index,
                                             int shift_index) {
  int v = blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= vectors) return;
  int c;
  Values at = values(table, timestep, v, dim, tokens, t_tokens, n, &c);
  uint4 xv = x[v], sr = at.row(scale_index, c), st = at.slice(scale_index, c);
  uint4 hr = at.row(shift_index, c), ht = at.slice(shift_index, c);
  out[v] = make_uint4(modulate2(xv.x, sr.x, st.x, hr.x, ht.x), modulate2(xv.y, sr.y, st.y, hr.y, ht.y),
                      modulate2(xv.z, sr.z, st.z, hr.z, ht.z), modulate2(xv.w, sr.w, st.w, hr.w, ht.w));
}

// One block per token row (blockDim = dim, in vectors): the row's RMS norm (unit weight), then
// the modulation, without writing the normalised row out.
extern "C" __global__ void ltx_norm_modulate_bf16(const uint4* x, const uint4* table, const uint4* timestep,
                                                  uint4* out, int dim, int tokens, int t_tokens, int n,
                                                  int scale_index, int shift_index, int eps_bits) {
  int v = blockIdx.x * dim + threadIdx.x, c;
  Values at = values(table, timestep, v, dim, tokens, t_tokens, n, &c);
  uint4 xv = x[v], sr = at.row(scale_index, c), st = at.slice(scale_index, c);
  uint4 hr = at.row(shift_index, c), ht = at.slice(shift_index, c);
  float inv = rsqrtf(block_sum(squares(xv)) / (float)(dim * 8) + __int_as_float(eps_bits));
  out[v] = make_uint4(modulate2(scale2(xv.x, inv), sr.x, st.x, hr.x, ht.x),
                      modulate2(scale2(xv.y, inv), sr.y, st.y, hr.y, ht.y),
                      modulate2(scale2(xv.z, inv), sr.z, st.z, hr.z, ht.z),
                      modulate2(scale2(xv.w, inv), sr.w, st.w, hr.w, ht.w));
}

extern "C" __global__ void ltx_gated_residual_bf16(const uint4* x, const uint4* update, const uint4* table,
                                                   const uint4* timestep, uint4* out, int vectors, int dim,
                                                   int tokens, int t_tokens, int n, int gate_index, int unused) {
  int v = blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= vectors) return;
  int c;
  Values at = values(table, timestep, v, dim, tokens, t_tokens, n, &c);
  uint4 xv = x[v], u = update[v], gr = at.row(gate_index, c), gt = at.slice(gate_index, c);
  out[v] = make_uint4(gate2(xv.x, u.x, gr.x, gt.x), gate2(xv.y, u.y, gr.y, gt.y), gate2(xv.z, u.z, gr.z, gt.z),
                      gate2(xv.w, u.w, gr.w, gt.w));
}
"""
)


def _run_cuda(
    name: str, arrays: list[mx.array], value: AdaValue, indices: list[int], threads_per_block: int | None = None
) -> mx.array | None:
    """The kernel `name` over `arrays` (x first, (B, T, dim)) and the table/timestep of `value`,
    one thread per 8 channels (`threads_per_block`: one block per row); None where it does not
    apply (not bf16, shapes it does not cover)."""
    x, table, timestep = arrays[0], value.table, value.timestep
    if not all(a.dtype == mx.bfloat16 for a in (*arrays, table, timestep)) or x.ndim != 3:
        return None
    batch, tokens, dim = x.shape
    rows, width = table.shape
    if width != dim or dim % 8 or timestep.ndim != 3 or timestep.shape[2] != rows * dim:
        return None
    if timestep.shape[0] != batch or timestep.shape[1] not in (1, tokens) or x.size >= 2**31:
        return None
    run = cuda_kernels.kernel(name, _SOURCE)
    if run is None:
        return None
    vectors = x.size // 8
    shape = [dim // 8, tokens, timestep.shape[1], rows, *indices]
    scalars = shape if threads_per_block else [vectors, *shape]
    (out,) = run([*arrays, table, timestep], [x.shape], [x.dtype], scalars, vectors, threads_per_block or 256)
    return out

"""BigVGAN's anti-aliased Snake activation (Activation1d) as one CUDA kernel, bf16 in and out.

The portable path (vocoder._anti_aliased_snake) takes four kernels and writes the twice-rate
signal to memory twice, in float32: a gather for the replicate padding, the filter bank with the
snake, a second gather, the strided low-pass. Here each thread reads a window of its input once,
keeps the upsampled and activated samples in registers and writes `OUTPUTS_PER_THREAD` output
samples of two channels. The filters are constants of the generated source (one source per
filter pair), the arithmetic float32 with explicit fused multiply-adds.

The source is plain C++ apart from the CUDA built-ins it names (no inline assembly), so a test
compiles it for the host with a few definitions and checks it against the portable path.
"""

from functools import cache

import mlx.core as mx

from LTX_2_MLX.model.common import cuda_kernels

OUTPUTS_PER_THREAD = 4
KERNEL_NAME = "ltx_anti_aliased_snake_bf16"

FilterBank = tuple[tuple[int, tuple[float, ...]], ...]

_HELPERS = (
    cuda_kernels.BF16_WORDS
    + r"""
// Round to nearest even (a NaN stays a NaN).
__device__ __forceinline__ unsigned int bf16_bits(float value) {
  unsigned int bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ bf16x2 pack_pair(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }
__device__ __forceinline__ float snake(float u, float alpha, float inverse_beta) {
  float s = sinf(u * alpha);
  return fmaf(inverse_beta, s * s, u);
}
__device__ __forceinline__ int clamp_index(int n, int length) { return n < 0 ? 0 : (n >= length ? length - 1 : n); }
"""
)


def _literal(value: float) -> str:
    return f"{float(value)!r}f".replace("inf", "INFINITY")


def _weighted_sum(terms: list[tuple[float, str]]) -> str:
    """sum(tap * value) as nested fmaf, zero taps left out."""
    terms = [(tap, value) for tap, value in terms if tap != 0.0]
    if not terms:
        return "0.0f"
    expression = f"{_literal(terms[0][0])} * {terms[0][1]}"
    for tap, value in terms[1:]:
        expression = f"fmaf({_literal(tap)}, {value}, {expression})"
    return expression


@cache
def kernel_source(bank: FilterBank, down_taps: tuple[float, ...], down_left: int) -> str | None:
    """The kernel for one filter pair, or None for a geometry it does not cover.

    Upsampled sample m = ratio·n + p is sum(vector[p] · x[clamp(n + shift)] for shift, vector in
    bank); output i is sum(down_taps[k] · snake(up[clamp(ratio·i + k − down_left)])). A thread
    covers outputs i0 .. i0 + OUTPUTS_PER_THREAD − 1, so upsampled samples m0 + j with
    m0 = ratio·i0 − down_left and j < window; their n and p are known per j at generation time.
    """
    ratio, outputs = len(bank[0][1]), OUTPUTS_PER_THREAD
    if ratio * outputs < down_left:  # the left replicate padding would reach past the first tile
        return None
    window = ratio * (outputs - 1) + len(down_taps)
    # Upsampled sample j of the window: n = i0 + offset[j], phase[j].
    offset = [(j - down_left) // ratio for j in range(window)]
    phase = [(j - down_left) % ratio for j in range(window)]
    shifts = [shift for shift, _ in bank]
    first, last = min(offset) + min(shifts), max(offset) + max(shifts)

    lines = []
    for k in range(last - first + 1):
        lines.append(f"  bf16x2 w{k} = row[(size_t)clamp_index(i0 + ({first + k}), length) * pairs];")
        lines.append(f"  float xl{k} = bf16_lo(w{k}) + bias_lo, xh{k} = bf16_hi(w{k}) + bias_hi;")
    for j in range(window):
        for half in ("l", "h"):
            terms = [(vector[phase[j]], f"x{half}{offset[j] + shift - first}") for shift, vector in bank]
            lines.append(f"  float a{half}{j} = snake({_weighted_sum(terms)}, alpha_{half}, inverse_beta_{half});")
    # The low-pass pads the twice-rate signal by replicating its first and last samples.
    lines.append("  if (i0 == 0) {")
    lines += [f"    al{j} = al{down_left}; ah{j} = ah{down_left};" for j in range(down_left)]
    lines.append("  }")
    lines.append(f"  int past_end = {ratio} * i0 - {down_left} - ({ratio} * length - 1);  // j beyond the last sample")
    lines.append(f"  if (past_end + {window - 1} > 0) {{")
    for k, shift in enumerate(shifts):
        lines.append(f"    bf16x2 e{k} = row[(size_t)clamp_index(length - 1 + ({shift}), length) * pairs];")
        lines.append(f"    float el{k} = bf16_lo(e{k}) + bias_lo, eh{k} = bf16_hi(e{k}) + bias_hi;")
    for half in ("l", "h"):
        terms = [(vector[ratio - 1], f"e{half}{k}") for k, (_, vector) in enumerate(bank)]
        lines.append(f"    float last_{half} = snake({_weighted_sum(terms)}, alpha_{half}, inverse_beta_{half});")
    for j in range(window):
        lines.append(f"    if (past_end + {j} > 0) {{ al{j} = last_l; ah{j} = last_h; }}")
    lines.append("  }")
    for o in range(outputs):
        sums = [_weighted_sum([(tap, f"a{half}{ratio * o + k}") for k, tap in enumerate(down_taps)]) for half in "lh"]
        lines.append(f"  if (i0 + {o} < length) out[(size_t)(i0 + {o}) * pairs] = pack_pair({sums[0]}, {sums[1]});")

    body = "\n".join(lines)
    return (
        _HELPERS
        + f"""
// x (B, length, 2·pairs) bf16 as pairs; bias (2·pairs) bf16 (read when with_bias); alpha and
// 1/(β + eps) (2·pairs) float32; out like x. One thread per {outputs} outputs of one channel pair.
extern "C" __global__ void {KERNEL_NAME}(const bf16x2* x, const bf16x2* bias, const float* alpha,
                                             const float* inverse_beta, bf16x2* y, int length, int pairs,
                                             int tiles, int threads, int with_bias) {{
  int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= threads) return;
  int pair = index % pairs, rest = index / pairs, tile = rest % tiles, batch = rest / tiles;
  int i0 = tile * {outputs};
  const bf16x2* row = x + (size_t)batch * length * pairs + pair;
  bf16x2* out = y + (size_t)batch * length * pairs + pair;
  float bias_lo = 0.0f, bias_hi = 0.0f;
  if (with_bias) {{
    bias_lo = bf16_lo(bias[pair]);
    bias_hi = bf16_hi(bias[pair]);
  }}
  float alpha_l = alpha[2 * pair], alpha_h = alpha[2 * pair + 1];
  float inverse_beta_l = inverse_beta[2 * pair], inverse_beta_h = inverse_beta[2 * pair + 1];
{body}
}}
"""
    )


def launch_arguments(shape: tuple[int, ...]) -> tuple[list[int], int]:
    """(the kernel's int scalars without with_bias, the thread count) for x of `shape` (B, L, C)."""
    batch, length, channels = shape
    pairs, tiles = channels // 2, -(-length // OUTPUTS_PER_THREAD)
    threads = batch * tiles * pairs
    return [length, pairs, tiles, threads], threads


def anti_aliased_snake(
    x: mx.array,
    bias: mx.array | None,
    alpha: mx.array,
    inverse_beta: mx.array,
    bank: FilterBank,
    down_taps: tuple[float, ...],
    down_left: int,
    down_right: int,
) -> mx.array | None:
    """Activation1d of x (+ bias) through the kernel, or None where it does not apply (not a
    CUDA GPU, not bf16, an odd channel count, a geometry the kernel does not cover)."""
    if not cuda_kernels.enabled() or x.dtype != mx.bfloat16 or x.ndim != 3 or x.shape[2] % 2:
        return None
    ratio, length = len(bank[0][1]), x.shape[1]
    if (ratio * length + down_left + down_right - len(down_taps)) // ratio + 1 != length:
        return None  # the kernel writes as many samples as it reads
    if (bias is not None and bias.dtype != mx.bfloat16) or x.size >= 2**31:
        return None
    if alpha.dtype != mx.float32 or inverse_beta.dtype != mx.float32:
        return None
    source = kernel_source(bank, down_taps, down_left)
    run = cuda_kernels.kernel(KERNEL_NAME, source) if source is not None else None
    if run is None:
        return None
    scalars, threads = launch_arguments(x.shape)
    bias_input = bias if bias is not None else x  # not read
    (out,) = run([x, bias_input, alpha, inverse_beta], [x.shape], [x.dtype], [*scalars, int(bias is not None)], threads)
    return out

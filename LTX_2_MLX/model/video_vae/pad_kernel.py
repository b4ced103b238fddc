"""The causal convolution's padding (edge frames in time, reflect / replicate / circular in
space) as one CUDA kernel: the padded video is written once. The portable path concatenates
once per padded axis, three copies of the video for a decoder convolution.

Each thread copies 16 bytes of one position's channels (8 bf16 or 4 float32 values), so it
serves any dtype whose channel row is a whole number of such vectors. Plain C++ apart from the
CUDA built-ins: the tests build it for the host (tests/host_kernels.py).
"""

import mlx.core as mx

from LTX_2_MLX.model.common import cuda_kernels

KERNEL_NAME = "ltx_pad_video"
MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}

SOURCE = r"""
struct Vector16 { unsigned int a, b, c, d; };

// Where output index `i` of an axis of `n` reads, padded by `pad` before; -1: a zero.
__device__ __forceinline__ long long source_index(long long i, long long n, int mode) {
  if (i >= 0 && i < n) return i;
  if (mode == 1) return i < 0 ? -i : 2 * (n - 1) - i;       // reflect (the edge not repeated)
  if (mode == 2) return i < 0 ? 0 : n - 1;                   // replicate
  if (mode == 3) return ((i % n) + n) % n;                   // circular
  return -1;                                                 // zeros
}

// x (B, frames, height, width, vectors) -> y (B, frames + front + back, height + 2 pad_h,
// width + 2 pad_w, vectors); time repeats the edge frames.
extern "C" __global__ void ltx_pad_video(const Vector16* x, Vector16* y, int frames, int height, int width,
                                         int vectors, int front, int out_frames, int pad_h, int pad_w, int mode,
                                         int total) {
  long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (v >= total) return;
  long long out_width = width + 2 * pad_w, out_height = height + 2 * pad_h;
  long long c = v % vectors, p = v / vectors;
  long long ow = p % out_width;
  p /= out_width;
  long long oh = p % out_height;
  p /= out_height;
  long long of = p % out_frames, batch = p / out_frames;
  long long t = of - front;
  t = t < 0 ? 0 : (t >= frames ? frames - 1 : t);
  long long h = source_index(oh - pad_h, height, mode), w = source_index(ow - pad_w, width, mode);
  if (h < 0 || w < 0) {
    Vector16 zero = {0u, 0u, 0u, 0u};
    y[v] = zero;
    return;
  }
  y[v] = x[(((batch * frames + t) * height + h) * width + w) * vectors + c];
}
"""


def pad_video(
    x: mx.array, temporal: tuple[int, int], spatial: tuple[int, int], mode: str, threads_per_block: int = 256
) -> mx.array | None:
    """x (B, F, H, W, C) padded by `temporal` = (front, back) edge frames and `spatial` = (h, w)
    on each side in `mode`; None where the kernel does not apply (not a CUDA GPU, a channel row
    that is not whole 16-byte vectors, a reflection wider than the axis)."""
    if not cuda_kernels.enabled() or x.ndim != 5 or mode not in MODES:
        return None
    batch, frames, height, width, channels = x.shape
    (front, back), (pad_h, pad_w) = temporal, spatial
    row_bytes = channels * x.dtype.size
    if row_bytes % 16 or min(front, back, pad_h, pad_w) < 0:
        return None
    if mode == "reflect" and (pad_h >= height or pad_w >= width):
        return None
    out_shape = (batch, frames + front + back, height + 2 * pad_h, width + 2 * pad_w, channels)
    vectors = row_bytes // 16
    total = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] * vectors
    if total >= 2**31:  # one thread per vector, counted in an int
        return None
    run = cuda_kernels.kernel(KERNEL_NAME, SOURCE)
    if run is None:
        return None
    scalars = [frames, height, width, vectors, front, out_shape[1], pad_h, pad_w, MODES[mode], total]
    (out,) = run([x], [out_shape], [x.dtype], scalars, total, threads_per_block)
    return out

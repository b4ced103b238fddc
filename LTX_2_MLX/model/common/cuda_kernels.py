"""Custom CUDA kernels for hot element-wise paths, compiled once per machine.

`mx.fast.cuda_kernel` compiles its source with NVRTC again in every process, MLX's headers
included (1-2 s per kernel). The kernels here include no header: they are compiled through
NVRTC (found beside MLX's CUDA libraries) to PTX for the GPUs present, kept on disk under a key
of source, options and NVRTC version, and run with `mx.fast.precompiled_cuda_kernel`. Where the
GPU is not CUDA, NVRTC cannot be found or a compile fails, `kernel()` returns None and callers
take their portable path. LTX2_MLX_CUDA_KERNELS=0 turns them off.

bf16 values travel as their 16-bit patterns, two to a word (`BF16_HELPERS`): every operation
is one correctly rounded packed bf16 instruction, so a kernel written as the reference's
sequence of bf16 tensor operations rounds as that sequence does. These instructions need
sm_80 (A100, RTX 30xx) or newer; older GPUs take the portable path."""

import ctypes
import glob
import hashlib
import os
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import numpy as np

# Plain C++ apart from CUDA's bit casts: kernels that use only these also build for the host.
BF16_WORDS = r"""
// Two bf16 values per 32-bit word (element 0 in the low half).
typedef unsigned int bf16x2;
__device__ __forceinline__ float bf16_lo(bf16x2 pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float bf16_hi(bf16x2 pair) { return __uint_as_float(pair & 0xffff0000u); }
"""

BF16_HELPERS = (
    BF16_WORDS
    + r"""
// Every operation is one packed bf16x2 instruction (sm_80 on), correctly rounded.
__device__ __forceinline__ bf16x2 pack_bf16(float lo, float hi) {
  bf16x2 out;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(out) : "f"(hi), "f"(lo));
  return out;
}
// a * b + c, one rounding.
__device__ __forceinline__ bf16x2 fma2(bf16x2 a, bf16x2 b, bf16x2 c) {
  bf16x2 out;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(out) : "r"(a), "r"(b), "r"(c));
  return out;
}
__device__ __forceinline__ bf16x2 mul2(bf16x2 a, bf16x2 b) { return fma2(a, b, 0x80008000u); }
__device__ __forceinline__ bf16x2 add2(bf16x2 a, bf16x2 b) { return fma2(a, 0x3f803f80u, b); }
__device__ __forceinline__ bf16x2 neg2(bf16x2 a) { return a ^ 0x80008000u; }

// x * inv for both halves of a word, each rounded to bf16 (a row normalised by its RMS).
__device__ __forceinline__ bf16x2 scale2(bf16x2 x, float inv) { return pack_bf16(bf16_lo(x) * inv, bf16_hi(x) * inv); }
__device__ __forceinline__ float squares(uint4 v) {
  float sum = 0.0f, value;
  value = bf16_lo(v.x); sum += value * value; value = bf16_hi(v.x); sum += value * value;
  value = bf16_lo(v.y); sum += value * value; value = bf16_hi(v.y); sum += value * value;
  value = bf16_lo(v.z); sum += value * value; value = bf16_hi(v.z); sum += value * value;
  value = bf16_lo(v.w); sum += value * value; value = bf16_hi(v.w); sum += value * value;
  return sum;
}
// The sum of `value` over the block, in every thread (blockDim.x a multiple of 32, <= 1024).
__device__ __forceinline__ float block_sum(float value) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = value;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
    if (threadIdx.x == 0) partial[0] = value;
  }
  __syncthreads();
  return partial[0];
}
"""
)


def float_bits(value: float) -> int:
    """A float32 kernel scalar as the int its bits spell (MLX 0.32.4 refuses float scalars)."""
    return int(np.array(value, np.float32).view(np.int32))


def enabled() -> bool:
    """Whether the default device is a CUDA GPU and the kernels are not turned off."""
    if os.environ.get("LTX2_MLX_CUDA_KERNELS", "1") == "0":
        return False
    return mx.default_device() == mx.gpu and mx.cuda.is_available()


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "ltx2-mlx" / "cuda-kernels"


def _nvrtc_candidates() -> list[str]:
    """NVRTC libraries: one this process already loaded (MLX links it), then the pip packages'
    and the toolkit's."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            found += sorted({line.split()[-1] for line in maps if "libnvrtc.so" in line and "builtins" not in line})
    except OSError:
        pass
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*")), reverse=True)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")), reverse=True)
    return found + ["libnvrtc.so"]


@lru_cache(maxsize=1)
def _nvrtc():
    for candidate in _nvrtc_candidates():
        if "builtins" in candidate:
            continue
        try:
            library = ctypes.CDLL(candidate)
            library.nvrtcCreateProgram  # noqa: B018 (a library without it is not NVRTC)
            return library
        except (OSError, AttributeError):
            continue
    return None


def cuda_driver():
    """The CUDA driver library (libcuda, through ctypes), or None where there is none."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


@lru_cache(maxsize=1)
def _lowest_compute_capability() -> int | None:
    """Of the GPUs present, e.g. 90 for an H100/H200; PTX for it also runs on newer ones."""
    driver = cuda_driver()
    if driver is None:
        return None
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None
    lowest = None
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        if driver.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
            return None
        driver.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # COMPUTE_CAPABILITY_MAJOR
        driver.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # COMPUTE_CAPABILITY_MINOR
        capability = major.value * 10 + minor.value
        lowest = capability if lowest is None else min(lowest, capability)
    return lowest


def _compile(source: str, options: list[str]) -> bytes | None:
    """PTX of `source` (NUL-terminated), from the disk cache or NVRTC; None when it cannot be had."""
    nvrtc = _nvrtc()
    if nvrtc is None:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    key = hashlib.sha256(f"{major.value}.{minor.value}\0{' '.join(options)}\0{source}".encode()).hexdigest()
    cached = _cache_dir() / f"{key}.ptx"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    program = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"ltx2_mlx.cu", 0, None, None) != 0:
        return None
    try:
        encoded = [option.encode() for option in options]
        if nvrtc.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded)) != 0:
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetProgramLog(program, log)
            # Our source failed to compile: a bug to report, not a user error; generation goes on.
            detail = log.value.decode(errors="replace")[:2000]
            warnings.warn(f"LTX-2-MLX CUDA kernels did not compile, using the portable path: {detail}")
            return None
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        if nvrtc.nvrtcGetPTX(program, ptx) != 0:
            return None
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    compiled = ptx.raw
    try:  # written whole, then renamed: a reader never sees part of it
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(compiled)
        partial.replace(cached)
    except OSError:
        pass
    return compiled


def kernel(name: str, source: str):
    """A callable running `extern "C" __global__ void name(...)` from `source` (inputs, then
    outputs, then int scalars, as `mx.fast.precompiled_cuda_kernel` passes them; a float goes as
    `float_bits`), or None when custom kernels cannot run here."""
    return _built(name, source) if enabled() else None


@lru_cache(maxsize=None)
def _built(name: str, source: str):
    capability = _lowest_compute_capability()
    if capability is None or capability < 80:
        return None
    ptx = _compile(source, [f"--gpu-architecture=compute_{capability}", "--std=c++17"])
    if ptx is None:
        return None

    def run(inputs, output_shapes, output_dtypes, scalars, threads: int, threads_per_block: int = 256):
        return mx.fast.precompiled_cuda_kernel(
            name=name,
            compiled_source=ptx,
            inputs=inputs,
            output_shapes=output_shapes,
            output_dtypes=output_dtypes,
            scalars=scalars,
            grid=(threads, 1, 1),
            threadgroup=(threads_per_block, 1, 1),
            ensure_row_contiguous=True,
        )

    return run

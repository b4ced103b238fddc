"""Runs a CUDA kernel of ours on the CPU: its source is compiled by the host's C++ compiler with
definitions for the CUDA built-ins it names, and every thread runs in turn (one thread per
block). For kernels written without inline assembly, shared memory or barriers. Stands in for
`cuda_kernels.kernel` so that a model takes its CUDA path here."""

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np

_PRELUDE = r"""
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <tuple>
#define __global__
#define __device__
#define __forceinline__ inline
struct HostIndex { unsigned x, y, z; };
static HostIndex blockIdx, blockDim, threadIdx;
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
"""

# The kernel's parameters taken in order from the buffers (pointers) and the int scalars.
_LAUNCHER = r"""
template <typename T> struct Argument;
template <typename T> struct Argument<T*> {
  static T* take(void** buffers, const int*, int& b, int&) { return (T*)buffers[b++]; }
};
template <> struct Argument<int> {
  static int take(void**, const int* scalars, int&, int& s) { return scalars[s++]; }
};
template <typename... P> static void call(void (*kernel)(P...), void** buffers, const int* scalars) {
  int b = 0, s = 0;
  std::tuple<P...> arguments{Argument<P>::take(buffers, scalars, b, s)...};  // braces: in order
  std::apply(kernel, arguments);
}
extern "C" void launch(void** buffers, const int* scalars, int threads) {
  blockDim.x = 1;
  threadIdx.x = 0;
  for (int i = 0; i < threads; ++i) {
    blockIdx.x = i;
    call(&NAME, buffers, scalars);
  }
}
"""


def compiler_available() -> bool:
    return shutil.which("c++") is not None


def _as_numpy(array: mx.array) -> np.ndarray:
    if array.dtype in (mx.bfloat16, mx.float16):
        return np.ascontiguousarray(np.array(array.view(mx.uint16)))
    return np.ascontiguousarray(np.array(array))


def _from_numpy(values: np.ndarray, dtype: mx.Dtype) -> mx.array:
    return mx.array(values).view(dtype) if dtype in (mx.bfloat16, mx.float16) else mx.array(values)


_NUMPY_DTYPES = {mx.bfloat16: np.uint16, mx.float16: np.uint16, mx.float32: np.float32, mx.int32: np.int32}


class HostKernels:
    """`kernel(name, source)` like cuda_kernels.kernel, built for the CPU; launches are recorded
    as (name, input shapes, scalars, threads)."""

    def __init__(self, build_dir: Path):
        self.build_dir, self.launches, self._libraries = Path(build_dir), [], {}

    def _library(self, name: str, source: str) -> ctypes.CDLL:
        program = _PRELUDE + source + _LAUNCHER.replace("NAME", name)
        key = hashlib.sha256(program.encode()).hexdigest()[:16]
        if key not in self._libraries:
            self.build_dir.mkdir(parents=True, exist_ok=True)
            source_path, library_path = self.build_dir / f"{key}.cpp", self.build_dir / f"{key}.so"
            source_path.write_text(program)
            command = ["c++", "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", str(source_path)]
            subprocess.run([*command, "-o", str(library_path)], check=True, capture_output=True)
            self._libraries[key] = ctypes.CDLL(str(library_path))
        return self._libraries[key]

    def kernel(self, name: str, source: str):
        library = self._library(name, source)

        def run(inputs, output_shapes, output_dtypes, scalars, threads, threads_per_block=256):
            self.launches.append((name, [a.shape for a in inputs], list(scalars), threads))
            arrays = [_as_numpy(a) for a in inputs]
            outputs = [np.zeros(shape, _NUMPY_DTYPES[dtype]) for shape, dtype in zip(output_shapes, output_dtypes)]
            buffers = (ctypes.c_void_p * (len(arrays) + len(outputs)))(*(a.ctypes.data for a in arrays + outputs))
            library.launch(buffers, (ctypes.c_int * max(1, len(scalars)))(*scalars), ctypes.c_int(threads))
            return [_from_numpy(values, dtype) for values, dtype in zip(outputs, output_dtypes)]

        return run

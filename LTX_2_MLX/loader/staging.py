"""Reading a checkpoint's tensors into device memory through two reused host buffers (CUDA).

MLX's CUDA backend reads a file into fresh managed memory, whose pages the first GPU use then
migrates fault by fault: 2.6-3.5 GB/s for the DiT (benchmarks/load_speed.py). Here the
tensors' byte ranges are read with `os.preadv` on a thread pool into one of two managed
buffers, and one integer copy per tensor brings it into device memory while the other buffer
fills. The buffers are made once per process and kept (`release()` gives them back); the CUDA
driver is asked (`cuMemAdvise`) to keep their pages in host memory and map them for the GPU,
so the copies read them over the bus instead of migrating them, and the next read does not
migrate them back: the DiT's 23 GB in 1.2-1.7 s on an H200 (14-20 GB/s), 3.4 s without the
advice (a one-off probe).

The same code runs on the CPU (buffers in plain memory, no advice): the tests read through it.
"""

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from LTX_2_MLX.model.common.cuda_kernels import cuda_driver

_BUFFER_BYTES = 2**28  # each of the two buffers
_ALIGN = 256  # where a piece starts in a buffer: aligned for the widest integer copy
_READ_BYTES = 2**24  # bytes per preadv call on the pool
_UNSIGNED = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}

# How each safetensors dtype is held once read (e4m3 as its raw bytes, decoded by the caller).
MX_DTYPES = {
    "F64": mx.float64, "F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16, "I64": mx.int64,
    "I32": mx.int32, "I16": mx.int16, "I8": mx.int8, "U64": mx.uint64, "U32": mx.uint32, "U16": mx.uint16,
    "U8": mx.uint8, "BOOL": mx.bool_, "F8_E4M3": mx.uint8,
}  # fmt: skip


def device_copy(array: mx.array) -> mx.array:
    """A bit-exact copy in the default device's memory (an integer no-op over the array's bits)."""
    return mx.bitwise_or(array.view(_UNSIGNED[array.itemsize]), 0).view(array.dtype)


@dataclass(frozen=True)
class Piece:
    """Part of one tensor's bytes: `nbytes` from `file_offset`, placed at `slot` in a buffer."""

    name: str
    file_offset: int
    nbytes: int
    slot: int


def plan_fills(ranges: dict[str, tuple[int, int]], buffer_bytes: int) -> list[list[Piece]]:
    """The byte ranges {name: (start, end)}, in file order, as fills of one buffer each: a
    range larger than a buffer is cut into buffer-sized pieces; every piece starts aligned."""
    fills: list[list[Piece]] = [[]]
    used = 0
    for name, (start, end) in sorted(ranges.items(), key=lambda item: item[1][0]):
        offset = start
        while offset < end:
            nbytes = min(end - offset, buffer_bytes)
            if used + nbytes > buffer_bytes:
                fills.append([])
                used = 0
            fills[-1].append(Piece(name, offset, nbytes, used))
            used += -(-nbytes // _ALIGN) * _ALIGN
            offset += nbytes
    return [fill for fill in fills if fill]


class _Buffers:
    """The two host buffers (MLX arrays, so the copies can take slices of them) and a pool."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.arrays = [mx.zeros((nbytes,), mx.uint8, stream=mx.cpu) for _ in range(2)]
        mx.eval(self.arrays)
        self.views = [np.asarray(array) for array in self.arrays]  # the same memory, writable
        if mx.cuda.is_available():
            for view in self.views:
                _keep_on_host(view)
        self.pool = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 4), thread_name_prefix="ltx-read")


_BUFFERS: _Buffers | None = None
_IN_USE = threading.Lock()


def _keep_on_host(view: np.ndarray) -> bool:
    """Advise the CUDA driver that these managed pages live in host memory and that every GPU
    reads them from there. Returns whether it took the advice (reads work either way)."""
    driver = cuda_driver()
    advise = getattr(driver, "cuMemAdvise", None)  # the (pointer, bytes, advice, device ordinal) form
    if advise is None:
        return False
    advise.argtypes = [ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    devices = ctypes.c_int(0)
    if driver.cuDeviceGetCount(ctypes.byref(devices)) != 0:
        return False
    pointer, nbytes = view.__array_interface__["data"][0], view.nbytes
    preferred_location, accessed_by, host = 3, 5, -1  # CU_MEM_ADVISE_*, CU_DEVICE_CPU
    took = advise(pointer, nbytes, preferred_location, host) == 0
    for device in range(devices.value):
        took = advise(pointer, nbytes, accessed_by, device) == 0 and took
    return took


def available() -> bool:
    """Whether a staged read can start now: not while another one (in this process) runs, as
    when work run between a read's fills loads a model itself."""
    return not _IN_USE.locked()


def release() -> None:
    """Give the buffers and their reading threads back (a process done loading); the next staged
    read makes them again. Not while a read runs."""
    global _BUFFERS
    if not _IN_USE.acquire(blocking=False):
        raise RuntimeError("a staged read is running; release the buffers after it")
    try:
        if _BUFFERS is not None:
            _BUFFERS.pool.shutdown()
            _BUFFERS = None
    finally:
        _IN_USE.release()


def read(
    path: Path,
    ranges: dict[str, tuple[int, int]],
    between: Callable[[], None] = lambda: None,
    advance: Callable[[int], None] = lambda nbytes: None,
) -> dict[str, mx.array]:
    """Every byte range {name: (start, end)} of the file at `path`, as a flat array of unsigned
    integers (the widest that divides its length) in device memory, read before returning.
    `between` runs once per fill, while its reads run; `advance(nbytes)` after each. Raises
    EOFError if the file is shorter than a range."""
    global _BUFFERS
    if not _IN_USE.acquire(blocking=False):
        raise RuntimeError("a staged read is already running; check available() first")
    try:
        if _BUFFERS is not None and _BUFFERS.nbytes != _BUFFER_BYTES:  # resized (benchmarks, tests)
            _BUFFERS.pool.shutdown()
            _BUFFERS = None
        if _BUFFERS is None:
            _BUFFERS = _Buffers(_BUFFER_BYTES)
        return _read(_BUFFERS, path, ranges, between, advance)
    finally:
        _IN_USE.release()


def _read(buffers: _Buffers, path, ranges, between, advance) -> dict[str, mx.array]:
    loaded: dict[str, mx.array] = {
        name: mx.zeros((0,), mx.uint8) for name, (start, end) in ranges.items() if start == end
    }
    copying: list[list[mx.array]] = [[], []]  # what each buffer's last fill is copied into
    reads: list[Future] = []
    descriptor = os.open(path, os.O_RDONLY)
    try:
        for index, fill in enumerate(plan_fills(ranges, buffers.nbytes)):
            which = index % 2
            mx.eval(copying[which])  # the buffer is free once its copies are done
            reads = []
            for piece in fill:
                for done in range(0, piece.nbytes, _READ_BYTES):
                    at, nbytes = piece.slot + done, min(_READ_BYTES, piece.nbytes - done)
                    reads.append(buffers.pool.submit(_read_into, descriptor, buffers.views[which], at,
                                                     piece.file_offset + done, nbytes))  # fmt: skip
            between()
            for done in reads:
                done.result()
            copies = []
            for piece in fill:
                start, end = ranges[piece.name]
                # The widest integer that divides the tensor (and so every piece: they are cut at
                # multiples of the buffer's size).
                bits = _UNSIGNED[next(size for size in (4, 2, 1) if (end - start) % size == 0)]
                raw = buffers.arrays[which][piece.slot : piece.slot + piece.nbytes].view(bits)
                if piece.nbytes == end - start:
                    loaded[piece.name] = device_copy(raw)
                else:  # a tensor larger than a buffer: its pieces copied into place, one allocation
                    if piece.name not in loaded:
                        loaded[piece.name] = mx.zeros(((end - start) // raw.itemsize,), bits)
                    at = (piece.file_offset - start) // raw.itemsize
                    loaded[piece.name][at : at + raw.size] = raw
                copies.append(loaded[piece.name])
            mx.async_eval(copies)
            copying[which] = copies
            advance(sum(piece.nbytes for piece in fill))
    finally:
        # Nothing may still write or read a buffer when the next read fills it: on a failure,
        # the fill's other preads may still be running.
        wait(reads)
        mx.eval(copying)
        os.close(descriptor)
    return loaded


def _read_into(descriptor: int, view: np.ndarray, slot: int, file_offset: int, nbytes: int) -> None:
    done = 0
    while done < nbytes:
        got = os.preadv(descriptor, [view[slot + done : slot + nbytes]], file_offset + done)
        if got <= 0:
            raise EOFError(f"the file ends before byte {file_offset + nbytes}")
        done += got

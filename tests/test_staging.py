"""Resident loads on CUDA read through two reused host buffers (loader.staging): how the byte
ranges are packed into fills, a file cut short after it was opened, a load started while
another one reads (work run between its fills), no buffer refilled before its copies ran, and
what the CUDA driver is asked."""

import ctypes
import random
import time

import mlx.core as mx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import LTX_2_MLX.loader.checkpoint as checkpoint_module
from LTX_2_MLX.loader import staging
from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, while_reading


def test_fills_cover_every_byte_once_in_file_order_within_a_buffer():
    rng = random.Random(0)
    buffer_bytes = 4096
    ranges, start = {}, 0
    for i in range(300):
        size = rng.choice([0, 1, 3, 255, 256, 1000, 4096, 4097, 9000])
        start += rng.choice([0, 8])
        ranges[f"t{i}"] = (start, start + size)
        start += size
    fills = staging.plan_fills(ranges, buffer_bytes)
    covered = {name: [] for name in ranges}
    order = []
    for fill in fills:
        used = [(piece.slot, piece.slot + piece.nbytes) for piece in fill]
        assert all(slot % 256 == 0 for slot, _ in used) and max(end for _, end in used) <= buffer_bytes
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(used, used[1:])), "pieces overlap"
        for piece in fill:
            covered[piece.name].append((piece.file_offset, piece.file_offset + piece.nbytes))
            order.append(piece.file_offset)
    assert order == sorted(order)
    for name, (start, end) in ranges.items():
        bounds = [start] + [piece_end for _, piece_end in covered[name]]
        assert [piece_start for piece_start, _ in covered[name]] == bounds[:-1] and bounds[-1] == end, name


def test_a_file_cut_short_after_opening_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "short.safetensors"
    save_file({"w.a": torch.ones(64, 64), "w.b": torch.ones(64, 64)}, str(path))
    checkpoint = Checkpoint.open(path)  # header read while the file was whole
    path.write_bytes(path.read_bytes()[:-1000])
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    with pytest.raises(CheckpointError, match="truncated.*Re-download it"):
        checkpoint.load_resident("w.")
    assert staging.available()  # the buffers are free for the next load


def test_a_load_started_between_fills_reads_lazily_and_right(tmp_path, monkeypatch):
    outer, inner = tmp_path / "outer.safetensors", tmp_path / "inner.safetensors"
    save_file({f"w.{i}": torch.full((64, 64), float(i)) for i in range(6)}, str(outer))  # 16 KiB each
    save_file({"v.x": torch.arange(10.0)}, str(inner))
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**15)
    nested = {}

    def load_inner():
        assert not staging.available()
        with pytest.raises(RuntimeError, match="already running"):
            staging.read(inner, {"v.x": (0, 4)})
        nested.update(Checkpoint.open(inner).load_resident("v."))

    with while_reading([load_inner]):
        loaded = Checkpoint.open(outer).load_resident("w.")
    assert mx.array_equal(nested["x"], mx.arange(10.0)).item()
    assert all(mx.array_equal(loaded[f"{i}"], mx.full((64, 64), float(i))).item() for i in range(6))
    assert staging.available()


def test_a_buffer_is_refilled_only_after_its_copies_are_done(tmp_path, monkeypatch):
    # With the copies never queued early (async_eval a no-op), each runs only when the read waits
    # for it: that must be before its buffer is filled again, or tensors 0 and 1 read 4 and 5's bytes.
    path = tmp_path / "refill.safetensors"
    save_file({f"w.{i}": torch.full((64, 64), float(i)) for i in range(6)}, str(path))  # 16 KiB each
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    monkeypatch.setattr(staging, "_BUFFER_BYTES", 2**15)  # two tensors a fill, three fills over two buffers
    monkeypatch.setattr(mx, "async_eval", lambda *arrays: None)
    loaded = Checkpoint.open(path).load_resident("w.")
    assert [float(loaded[f"{i}"][0, 0]) for i in range(6)] == [float(i) for i in range(6)]


def test_the_driver_is_asked_to_keep_the_buffers_on_the_host_for_every_gpu(monkeypatch):
    # On CUDA: preferred location the CPU (device -1), accessed by each GPU, over the whole buffer.
    calls = []

    class Advise:
        argtypes = None

        def __call__(self, *args):
            calls.append(args)
            return 0

    class Driver:
        cuMemAdvise = Advise()

        def cuDeviceGetCount(self, count):
            ctypes.cast(count, ctypes.POINTER(ctypes.c_int)).contents.value = 2
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver() if name == "libcuda.so.1" else None)
    view = np.zeros(4096, np.uint8)
    assert staging._keep_on_host(view)
    pointer = view.__array_interface__["data"][0]
    assert calls == [(pointer, 4096, 3, -1), (pointer, 4096, 5, 0), (pointer, 4096, 5, 1)]


def test_a_failed_read_leaves_no_read_writing_into_a_buffer(tmp_path, monkeypatch):
    path = tmp_path / "failing.safetensors"
    save_file({f"w.{i}": torch.full((64, 64), float(i)) for i in range(2)}, str(path))
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    monkeypatch.setattr(staging, "_READ_BYTES", 4096)  # 8 preads in the one fill
    submitted, finished = [], []
    read_into = staging._read_into

    def slow_read_into(*args):
        submitted.append(1)
        time.sleep(0.05)
        read_into(*args)
        finished.append(1)

    def failing_work():
        raise RuntimeError("work between fills failed")

    monkeypatch.setattr(staging, "_read_into", slow_read_into)
    with pytest.raises(RuntimeError, match="between fills"), while_reading([failing_work]):
        Checkpoint.open(path).load_resident("w.")
    assert len(finished) == 8 and staging.available()


def test_the_buffers_are_given_back_on_request_and_made_again(tmp_path, monkeypatch):
    path = tmp_path / "release.safetensors"
    save_file({"w.a": torch.arange(4096.0)}, str(path))
    monkeypatch.setattr(checkpoint_module, "_HOST_READ", True)
    Checkpoint.open(path).load_resident("w.")
    mx.synchronize()
    held = mx.get_active_memory()
    staging.release()
    assert held - mx.get_active_memory() >= 2 * staging._BUFFER_BYTES
    loaded = Checkpoint.open(path).load_resident("w.")
    assert mx.array_equal(loaded["a"], mx.arange(4096.0)).item()
    refused = []

    def release_during_the_read():
        with pytest.raises(RuntimeError, match="read is running"):
            staging.release()
        refused.append(True)

    with while_reading([release_during_the_read]):
        Checkpoint.open(path).load_resident("w.")
    assert refused

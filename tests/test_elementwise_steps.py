"""The DiT's element-wise steps: the portable path against ltx-core's expressions, and how the
CUDA kernels are dispatched (which inputs reach them, with which launch arguments). The kernels
themselves run only on a CUDA GPU; their H200 checks against ltx-core are in
benchmarks/results/h200-2026-11-29g/."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from ltx_core.utils import rms_norm as reference_rms_norm

from LTX_2_MLX.model.common import cuda_kernels
from LTX_2_MLX.model.transformer import modulation, rope
from LTX_2_MLX.model.transformer.modulation import AdaValue, Normed, gated_residual, modulate


def bf16_inputs(batch: int, tokens: int, dim: int, timestep_tokens: int, rows: int = 9, seed: int = 0):
    mx.random.seed(seed)
    x = (2 * mx.random.normal((batch, tokens, dim))).astype(mx.bfloat16)
    update = (2 * mx.random.normal((batch, tokens, dim))).astype(mx.bfloat16)
    table = (0.5 * mx.random.normal((rows, dim))).astype(mx.bfloat16)
    timestep = (0.5 * mx.random.normal((batch, timestep_tokens, rows * dim))).astype(mx.bfloat16)
    return x, update, table, timestep


def to_torch(array: mx.array) -> torch.Tensor:
    return torch.from_numpy(np.array(array.astype(mx.float32))).to(torch.bfloat16)


def to_mlx(tensor: torch.Tensor) -> mx.array:
    return mx.array(tensor.float().numpy()).astype(mx.bfloat16)


@pytest.mark.parametrize("timestep_tokens", [1, 24])
def test_adaln_steps_round_as_ltx_core_expressions(timestep_tokens):
    """Rows 3 (shift), 4 (scale), 5 (gate) of the table plus the matching timestep slices, as
    ltx-core's get_ada_values and block arithmetic compute them in bf16."""
    x, update, table, timestep = bf16_inputs(2, 24, 64, timestep_tokens)
    shift, scale, gate = (AdaValue(table, timestep, index) for index in (3, 4, 5))
    ada = to_torch(table)[None, None] + to_torch(timestep).reshape(2, timestep_tokens, 9, 64)
    expected_modulated = to_torch(x) * (1 + ada[:, :, 4]) + ada[:, :, 3]
    expected_residual = to_torch(x) + to_torch(update) * ada[:, :, 5]
    expected_normed = reference_rms_norm(to_torch(x), eps=1e-6) * (1 + ada[:, :, 4]) + ada[:, :, 3]
    assert mx.array_equal(modulate(x, scale, shift), to_mlx(expected_modulated))
    assert mx.array_equal(gated_residual(x, update, gate), to_mlx(expected_residual))
    normed = Normed(x, 1e-6)
    first = normed.modulated(scale, shift)
    assert mx.array_equal(first, modulate(modulation.rms_norm(x, 1e-6), scale, shift))
    assert mx.array_equal(normed.modulated(scale, shift), first)  # the norm computed once, reused
    assert mx.abs(first.astype(mx.float32) - to_mlx(expected_normed).astype(mx.float32)).max().item() <= 0.0625


def test_split_rotation_in_bf16_equals_ltx_core_bit_for_bit():
    from ltx_core.model.transformer.rope import LTXRopeType as ReferenceRopeType
    from ltx_core.model.transformer.rope import apply_rotary_emb as reference_rotary_emb

    mx.random.seed(3)
    x = (3 * mx.random.normal((2, 50, 8 * 64))).astype(mx.bfloat16)
    angles = mx.random.uniform(0, 6.3, (2, 50, 8, 32))
    cos, sin = mx.cos(angles).astype(mx.bfloat16), mx.sin(angles).astype(mx.bfloat16)
    ours = rope.apply_rotary_emb(x, (cos, sin), rope.LTXRopeType.SPLIT)
    tables = (to_torch(cos).transpose(1, 2), to_torch(sin).transpose(1, 2))  # ltx-core's (B, H, T, D/2)
    assert mx.array_equal(ours, to_mlx(reference_rotary_emb(to_torch(x), tables, ReferenceRopeType.SPLIT)))


def test_normed_rotation_is_the_rotation_of_the_norm():
    mx.random.seed(1)
    x = (3 * mx.random.normal((2, 10, 4 * 32))).astype(mx.bfloat16)
    angles = mx.random.uniform(0, 6.3, (2, 10, 4, 16))
    tables = (mx.cos(angles).astype(mx.bfloat16), mx.sin(angles).astype(mx.bfloat16))
    norm = nn.RMSNorm(128, eps=1e-6)
    norm.weight = (1 + 0.1 * mx.random.normal((128,))).astype(mx.bfloat16)
    fused = rope.normed_rotary_emb(x, norm, tables, rope.LTXRopeType.SPLIT)
    assert mx.array_equal(fused, rope.apply_rotary_emb(norm(x), tables, rope.LTXRopeType.SPLIT))


class RecordingKernels:
    """Stands in for compiled kernels: records each launch and returns its first input."""

    def __init__(self):
        self.launches = []

    def kernel(self, name, source):
        def run(inputs, output_shapes, output_dtypes, scalars, threads, threads_per_block=256):
            self.launches.append((name, [a.shape for a in inputs], scalars, threads, threads_per_block))
            assert output_shapes == [inputs[0].shape] and output_dtypes == [inputs[0].dtype]
            return [inputs[0]]

        return run


@pytest.fixture
def recording(monkeypatch):
    kernels = RecordingKernels()
    monkeypatch.setattr(cuda_kernels, "enabled", lambda: True)
    monkeypatch.setattr(cuda_kernels, "kernel", kernels.kernel)
    return kernels


def test_bf16_steps_launch_one_thread_per_eight_channels(recording):
    x, update, table, timestep = bf16_inputs(2, 24, 256, 1)
    shift, scale, gate = (AdaValue(table, timestep, index) for index in (3, 4, 5))
    modulate(x, scale, shift)
    gated_residual(x, update, gate)
    Normed(x, 1e-6).modulated(scale, shift)
    vectors = 2 * 24 * 256 // 8
    assert recording.launches == [
        ("ltx_modulate_bf16", [x.shape, table.shape, timestep.shape], [vectors, 32, 24, 1, 9, 4, 3], vectors, 256),
        ("ltx_gated_residual_bf16", [x.shape, update.shape, table.shape, timestep.shape],
         [vectors, 32, 24, 1, 9, 5, 5], vectors, 256),
        # one block of dim / 8 threads per token row, eps as its float32 bits
        ("ltx_norm_modulate_bf16", [x.shape, table.shape, timestep.shape],
         [32, 24, 1, 9, 4, 3, cuda_kernels.float_bits(1e-6)], vectors, 32),
    ]  # fmt: skip


def test_rotations_launch_per_half_head_vector(recording):
    mx.random.seed(2)
    x = mx.random.normal((2, 10, 8 * 64)).astype(mx.bfloat16)
    cos = sin = mx.ones((1, 10, 8, 32), mx.bfloat16)  # tables shared by the batch
    norm = nn.RMSNorm(512, eps=1e-5)
    norm.weight = norm.weight.astype(mx.bfloat16)
    rope.apply_rotary_emb(x, (cos, sin), rope.LTXRopeType.SPLIT)
    rope.normed_rotary_emb(x, norm, (cos, sin), rope.LTXRopeType.SPLIT)
    vectors = x.size // 16
    assert recording.launches == [
        ("ltx_rope_split_bf16", [x.shape, cos.shape, sin.shape], [vectors, 4, 10 * 8 * 4], vectors, 256),
        # one block of dim / 16 threads per token row
        ("ltx_norm_rope_split_bf16", [x.shape, (512,), cos.shape, sin.shape],
         [4, 10, cuda_kernels.float_bits(1e-5)], 2 * 10 * 32, 32),
    ]  # fmt: skip


def test_inputs_the_kernels_do_not_cover_take_the_portable_path(recording):
    x, update, table, timestep = bf16_inputs(2, 24, 64, 1)
    x32 = x.astype(mx.float32)
    shift, scale, gate = (AdaValue(table, timestep, index) for index in (3, 4, 5))
    other = AdaValue(table * 1, timestep, 4)  # scale and shift from different tables
    expected = modulation._modulate_kernel(x32, *scale.parts(), *shift.parts())
    assert mx.array_equal(modulate(x32, scale, shift), expected)  # float32
    modulate(x, other, shift)
    gated_residual(x, update[:, :1], gate)  # an update that broadcasts
    Normed(mx.zeros((1, 3, 72), mx.bfloat16), 1e-6).modulated(*ada_pair(72))  # rows of 9 threads: no
    angles = mx.zeros((1, 3, 4, 12))
    tables = (mx.cos(angles).astype(mx.bfloat16), mx.sin(angles).astype(mx.bfloat16))
    rope.apply_rotary_emb(mx.zeros((1, 3, 96), mx.bfloat16), tables, rope.LTXRopeType.SPLIT)  # half of 12
    interleaved = (mx.ones((1, 3, 128), mx.bfloat16), mx.zeros((1, 3, 128), mx.bfloat16))
    rope.apply_rotary_emb(mx.zeros((1, 3, 128), mx.bfloat16), interleaved, rope.LTXRopeType.INTERLEAVED)
    # only the modulation after the unfused norm of the 72-wide rows
    assert [launch[0] for launch in recording.launches] == ["ltx_modulate_bf16"]


def ada_pair(dim: int) -> tuple[AdaValue, AdaValue]:
    table, timestep = mx.zeros((2, dim), mx.bfloat16), mx.zeros((1, 1, 2 * dim), mx.bfloat16)
    return AdaValue(table, timestep, 0), AdaValue(table, timestep, 1)


def test_no_kernels_off_cuda_or_when_turned_off(monkeypatch):
    assert cuda_kernels.kernel("ltx_modulate_bf16", modulation._SOURCE) is None  # the CPU here
    monkeypatch.setenv("LTX2_MLX_CUDA_KERNELS", "0")
    assert not cuda_kernels.enabled()


class FakeNVRTC:
    """NVRTC's C interface as the compile path calls it through ctypes; `fails` makes every
    compile fail with a log."""

    def __init__(self, fails: bool = False):
        self.fails, self.compiles = fails, 0

    def nvrtcVersion(self, major, minor):
        major._obj.value, minor._obj.value = 13, 0
        return 0

    def nvrtcCreateProgram(self, program, source, name, headers, names, include_names):
        program._obj.value = 1
        self.source = source
        return 0

    def nvrtcCompileProgram(self, program, count, options):
        self.compiles += 1
        self.options = [options[i] for i in range(count)]
        return 6 if self.fails else 0

    def nvrtcGetProgramLogSize(self, program, size):
        size._obj.value = 32
        return 0

    def nvrtcGetProgramLog(self, program, log):
        log.value = b"error: identifier undefined"
        return 0

    def nvrtcGetPTXSize(self, program, size):
        size._obj.value = len(self.source) + 1
        return 0

    def nvrtcGetPTX(self, program, ptx):
        ptx.value = self.source
        return 0

    def nvrtcDestroyProgram(self, program):
        return 0


def test_kernels_compile_once_per_machine_then_load_from_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    nvrtc = FakeNVRTC()
    monkeypatch.setattr(cuda_kernels, "_nvrtc", lambda: nvrtc)
    options = ["--gpu-architecture=compute_90", "--std=c++17"]
    first = cuda_kernels._compile('extern "C" __global__ void k() {}', options)
    assert first == b'extern "C" __global__ void k() {}\0' and nvrtc.compiles == 1
    assert nvrtc.options == [option.encode() for option in options]
    assert [p.suffix for p in (tmp_path / "ltx2-mlx" / "cuda-kernels").iterdir()] == [".ptx"]  # no part file left
    assert cuda_kernels._compile('extern "C" __global__ void k() {}', options) == first
    assert nvrtc.compiles == 1  # the second process's compile is a file read
    cuda_kernels._compile('extern "C" __global__ void other() {}', options)
    assert nvrtc.compiles == 2


def test_a_kernel_that_does_not_compile_warns_and_leaves_the_portable_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cuda_kernels, "_nvrtc", lambda: FakeNVRTC(fails=True))
    monkeypatch.setattr(cuda_kernels, "enabled", lambda: True)
    monkeypatch.setattr(cuda_kernels, "_lowest_compute_capability", lambda: 90)
    cuda_kernels._built.cache_clear()
    try:
        with pytest.warns(UserWarning, match="did not compile.*identifier undefined"):
            assert cuda_kernels.kernel("ltx_modulate_bf16", modulation._SOURCE) is None
        x, update, table, timestep = bf16_inputs(1, 4, 64, 1)
        scale, shift = AdaValue(table, timestep, 4), AdaValue(table, timestep, 3)
        expected = modulation._modulate_kernel(x, *scale.parts(), *shift.parts())
        assert mx.array_equal(modulate(x, scale, shift), expected)
        monkeypatch.setattr(cuda_kernels, "_lowest_compute_capability", lambda: 75)  # before sm_80
        cuda_kernels._built.cache_clear()
        assert cuda_kernels.kernel("ltx_modulate_bf16", modulation._SOURCE) is None
    finally:
        cuda_kernels._built.cache_clear()

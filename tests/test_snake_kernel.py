"""The anti-aliased Snake kernel (BigVGAN's Activation1d on CUDA), run on the CPU through the
host compiler (tests/host_kernels.py, the `host_kernels` fixture), against the portable path it
replaces."""

import mlx.core as mx
import numpy as np
import pytest

from LTX_2_MLX.model.audio_vae import snake_kernel
from LTX_2_MLX.model.audio_vae.vocoder import Activation1d, Snake, SnakeBeta
from LTX_2_MLX.model.common import cuda_kernels


def activation(channels: int, kind=SnakeBeta, seed: int = 0) -> Activation1d:
    mx.random.seed(seed)
    module = Activation1d(kind(channels))
    module.act.alpha = 0.5 * mx.random.normal((channels,))
    if kind is SnakeBeta:
        module.act.beta = 0.5 * mx.random.normal((channels,))
    return module


def assert_within_a_bf16_step(actual: mx.array, expected: mx.array) -> None:
    """Both paths sum in float32, in different orders: a rounding to bf16 may land one step
    apart, or, where terms cancel near zero, float32 noise at the output's scale apart."""
    actual, expected = np.array(actual.astype(mx.float32)), np.array(expected.astype(mx.float32))
    allowed = 2**-7 * np.abs(expected) + 2**-20 * np.abs(expected).max()
    assert np.all(np.abs(actual - expected) <= allowed), np.max(np.abs(actual - expected) / allowed)
    assert np.mean(actual != expected) <= 0.01


# Lengths: shorter than the filters, one partial tile, whole tiles, ragged; the right edge of the
# window lands at every offset of a tile.
@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13, 64, 67])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_equals_the_portable_activation(host_kernels, length, with_bias):
    module = activation(6, seed=length)
    mx.random.seed(100 + length)
    x = (2 * mx.random.normal((2, length, 6))).astype(mx.bfloat16)
    bias = (0.3 * mx.random.normal((6,))).astype(mx.bfloat16) if with_bias else None
    fused = module(x, bias)
    assert [launch[0] for launch in host_kernels.launches] == [snake_kernel.KERNEL_NAME]
    tiles = -(-length // snake_kernel.OUTPUTS_PER_THREAD)
    assert host_kernels.launches[0][2:] == ([length, 3, tiles, 2 * tiles * 3, int(with_bias)], 2 * tiles * 3)
    with pytest.MonkeyPatch.context() as portable:
        portable.setattr(cuda_kernels, "enabled", lambda: False)
        expected = module(x, bias)
    assert fused.shape == expected.shape and fused.dtype == mx.bfloat16
    assert_within_a_bf16_step(fused, expected)


def test_snake_with_alpha_for_beta_takes_the_kernel_too(host_kernels):
    module = activation(4, kind=Snake, seed=2)
    x = (2 * mx.random.normal((1, 40, 4))).astype(mx.bfloat16)
    fused = module(x)
    with pytest.MonkeyPatch.context() as portable:
        portable.setattr(cuda_kernels, "enabled", lambda: False)
        expected = module(x)
    assert len(host_kernels.launches) == 1
    assert_within_a_bf16_step(fused, expected)


def test_inputs_the_kernel_does_not_cover_take_the_portable_path(host_kernels):
    module = activation(6)
    module(mx.zeros((1, 9, 6)))  # float32
    module(mx.zeros((1, 9, 6), mx.float16))
    activation(5)(mx.zeros((1, 9, 5), mx.bfloat16))  # an odd channel count
    module(mx.zeros((1, 9, 6), mx.bfloat16), mx.zeros((6,)))  # a float32 bias
    module.downsample.lowpass.pad_right -= 2  # a low-pass that would shorten the signal
    module(mx.zeros((1, 9, 6), mx.bfloat16))
    assert host_kernels.launches == []


def test_a_geometry_whose_padding_reaches_past_the_first_tile_has_no_kernel():
    bank = ((0, (1.0, 0.0)),)
    assert snake_kernel.kernel_source(bank, (0.5,) * 12, 2 * snake_kernel.OUTPUTS_PER_THREAD + 1) is None
    assert snake_kernel.kernel_source(bank, (0.5,) * 12, 2 * snake_kernel.OUTPUTS_PER_THREAD) is not None

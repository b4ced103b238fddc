import math

import mlx.core as mx
import mlx.nn as nn


def binomial_kernel(kernel_size: int) -> mx.array:
    """The normalised outer product of a row of Pascal's triangle (a Gaussian-like blur)."""
    row = mx.array([math.comb(kernel_size - 1, i) for i in range(kernel_size)], dtype=mx.float32)
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Anti-aliased spatial downsampling by an integer stride: a fixed depthwise blur.

    Takes (N, H, W, C). `kernel` is (1, k, k, 1), the reference's (1, 1, k, k) buffer in MLX
    convolution layout; official files carry it, so it is loaded like a weight.
    """

    def __init__(self, stride: int, kernel_size: int = 5):
        super().__init__()
        if stride < 1 or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"BlurDownsample: stride={stride} must be >= 1 and kernel_size={kernel_size} odd >= 3")
        self.stride = stride
        self.kernel_size = kernel_size
        self.kernel = binomial_kernel(kernel_size)[None, :, :, None]

    def __call__(self, x: mx.array) -> mx.array:
        if self.stride == 1:
            return x
        channels = x.shape[-1]
        weight = mx.broadcast_to(self.kernel, (channels, self.kernel_size, self.kernel_size, 1))
        return mx.conv2d(x, weight, stride=self.stride, padding=self.kernel_size // 2, groups=channels)

import mlx.core as mx
import mlx.nn as nn


class PixelNorm(nn.Module):
    """x / sqrt(mean(x², channels) + eps): an RMS norm over the channel (last) axis, no weight.
    The VAEs use it with their own eps (video 1e-8, audio 1e-6)."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, None, self.eps)

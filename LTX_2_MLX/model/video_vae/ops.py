"""Layout changes between pixels and channels, per-pixel normalisation and the latent statistics.

Inside the VAE arrays are channels-last, (B, F, H, W, C), the layout MLX convolutions use; the
public boundary keeps the reference's (B, C, F, H, W).
"""

from typing import ClassVar

import mlx.core as mx
import mlx.nn as nn


def patchify(video: mx.array, patch_size: int) -> mx.array:
    """(B, C, F, H, W) pixels -> (B, F, H/p, W/p, C·p·p) channels-last features.

    Channels are ordered (c, w-offset, h-offset), as ltx-core's "b c f (h q) (w r) -> b (c r q) f h w".
    """
    b, c, f, h, w = video.shape
    p = patch_size
    x = video.reshape(b, c, f, h // p, p, w // p, p)
    x = x.transpose(0, 2, 3, 5, 1, 6, 4)  # b f h' w' c r q
    return x.reshape(b, f, h // p, w // p, c * p * p)


def unpatchify(x: mx.array, patch_size: int) -> mx.array:
    """Inverse of `patchify`: (B, F, H, W, C·p·p) -> (B, C, F, H·p, W·p)."""
    b, f, h, w, cpp = x.shape
    p = patch_size
    c = cpp // (p * p)
    x = x.reshape(b, f, h, w, c, p, p)  # b f h w c r q
    x = x.transpose(0, 4, 1, 2, 6, 3, 5)  # b c f h q w r
    return x.reshape(b, c, f, h * p, w * p)


def space_to_depth(x: mx.array, stride: tuple[int, int, int]) -> mx.array:
    """(B, F·s0, H·s1, W·s2, C) -> (B, F, H, W, C·s0·s1·s2), channels ordered (c, s0, s1, s2)."""
    b, f, h, w, c = x.shape
    s0, s1, s2 = stride
    x = x.reshape(b, f // s0, s0, h // s1, s1, w // s2, s2, c)
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, f // s0, h // s1, w // s2, c * s0 * s1 * s2)


def depth_to_space(x: mx.array, stride: tuple[int, int, int]) -> mx.array:
    """Inverse of `space_to_depth`: (B, F, H, W, C·s0·s1·s2) -> (B, F·s0, H·s1, W·s2, C)."""
    b, f, h, w, cs = x.shape
    s0, s1, s2 = stride
    c = cs // (s0 * s1 * s2)
    x = x.reshape(b, f, h, w, c, s0, s1, s2)
    x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, f * s0, h * s1, w * s2, c)


class PerChannelStatistics(nn.Module):
    """Dataset statistics of the latent means, stored with the VAE (`vae.per_channel_statistics`).

    The checkpoint names them `std-of-means` and `mean-of-means`; MLX attribute names cannot
    hold '-', so they become `std_of_means` / `mean_of_means` (see `sanitize`).
    """

    CHECKPOINT_KEYS: ClassVar[dict[str, str]] = {"std-of-means": "std_of_means", "mean-of-means": "mean_of_means"}

    def __init__(self, latent_channels: int):
        super().__init__()
        self.std_of_means = mx.ones((latent_channels,))
        self.mean_of_means = mx.zeros((latent_channels,))

    @classmethod
    def sanitize(cls, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Keep the two statistics the model uses under their module names.

        Official files may hold further statistics (ltx-core loads non-strictly and ignores
        them); a missing one is left missing so strict loading reports it.
        """
        return {cls.CHECKPOINT_KEYS[k]: v for k, v in weights.items() if k in cls.CHECKPOINT_KEYS}

    def _broadcast(self, stat: mx.array, x: mx.array, channel_axis: int) -> mx.array:
        shape = [1] * x.ndim
        shape[channel_axis] = stat.shape[0]
        return stat.reshape(shape).astype(x.dtype)

    def normalize(self, x: mx.array, channel_axis: int = 1) -> mx.array:
        """(latent - mean) / std, channels on `channel_axis` (1 for (B, C, F, H, W))."""
        mean = self._broadcast(self.mean_of_means, x, channel_axis)
        std = self._broadcast(self.std_of_means, x, channel_axis)
        return (x - mean) / std

    def un_normalize(self, x: mx.array, channel_axis: int = 1) -> mx.array:
        """latent · std + mean, the inverse of `normalize`."""
        mean = self._broadcast(self.mean_of_means, x, channel_axis)
        std = self._broadcast(self.std_of_means, x, channel_axis)
        return x * std + mean

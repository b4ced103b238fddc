"""Latent grids <-> token sequences, and each token's position (ltx-core
`components/patchifiers.py`).

Positions are [start, end) bounds per token: video (B, 3, T, 2) over (frame, height, width),
audio (B, 1, T, 2) in seconds.
"""

import math
from typing import Protocol

import mlx.core as mx

from LTX_2_MLX.components.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape


class Patchifier(Protocol):
    def patchify(self, latents: mx.array) -> mx.array: ...

    def unpatchify(self, latents: mx.array, output_shape: AudioLatentShape | VideoLatentShape) -> mx.array: ...

    @property
    def patch_size(self) -> tuple[int, int, int]: ...

    def get_token_count(self, tgt_shape: AudioLatentShape | VideoLatentShape) -> int: ...

    def get_patch_grid_bounds(self, output_shape: AudioLatentShape | VideoLatentShape) -> mx.array: ...


class VideoLatentPatchifier(Patchifier):
    """(B, C, F, H, W) <-> (B, F·H/p·W/p, C·p·p) with a p×p spatial patch (temporal patch 1)."""

    def __init__(self, patch_size: int):
        self._patch_size = (1, patch_size, patch_size)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self._patch_size

    def get_token_count(self, tgt_shape: VideoLatentShape) -> int:
        return math.prod(tgt_shape.to_shape()[2:]) // math.prod(self._patch_size)

    def patchify(self, latents: mx.array) -> mx.array:
        b, c, f, h, w = latents.shape
        p1, p2, p3 = self._patch_size
        if f % p1 or h % p2 or w % p3:
            raise ValueError(f"latent grid {(f, h, w)} is not divisible by the patch size {self._patch_size}")
        x = latents.reshape(b, c, f // p1, p1, h // p2, p2, w // p3, p3)
        x = x.transpose(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, (f // p1) * (h // p2) * (w // p3), c * p1 * p2 * p3)

    def unpatchify(self, latents: mx.array, output_shape: VideoLatentShape) -> mx.array:
        _, p, q = self._patch_size
        f = output_shape.frames // self._patch_size[0]
        h = output_shape.height // p
        w = output_shape.width // q
        b, tokens, features = latents.shape
        if tokens != f * h * w:
            raise ValueError(f"{tokens} tokens cannot be unpatchified to {output_shape} ({f * h * w} expected)")
        x = latents.reshape(b, f, h, w, features // (p * q), p, q)
        x = x.transpose(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, features // (p * q), f, h * p, w * q)

    def get_patch_grid_bounds(self, output_shape: VideoLatentShape) -> mx.array:
        """(B, 3, num_patches, 2) int32 [start, end) of each patch in latent-grid units."""
        if not isinstance(output_shape, VideoLatentShape):
            raise ValueError("VideoLatentPatchifier expects a VideoLatentShape when computing coordinates")
        frames, height, width, batch = output_shape.frames, output_shape.height, output_shape.width, output_shape.batch
        for name, value in (("frames", frames), ("height", height), ("width", width), ("batch", batch)):
            if value <= 0:
                raise ValueError(f"{name}={value} must be positive")
        pf, ph, pw = self._patch_size
        grid = mx.meshgrid(
            mx.arange(0, frames, pf, dtype=mx.int32),
            mx.arange(0, height, ph, dtype=mx.int32),
            mx.arange(0, width, pw, dtype=mx.int32),
            indexing="ij",
        )
        patch_starts = mx.stack(grid, axis=0)  # (3, f, h, w)
        patch_ends = patch_starts + mx.array(self._patch_size, dtype=mx.int32).reshape(3, 1, 1, 1)
        coords = mx.stack([patch_starts, patch_ends], axis=-1).reshape(3, -1, 2)
        return mx.broadcast_to(coords[None], (batch, *coords.shape))


def get_pixel_coords(
    latent_coords: mx.array,
    scale_factors: SpatioTemporalScaleFactors,
    causal_fix: bool = False,
) -> mx.array:
    """Latent [start, end) bounds (B, 3, T, 2) scaled to pixel units by the VAE's factors.

    With `causal_fix`, time is shifted by 1 - time_factor and clamped at 0: the causal VAE
    encodes the first pixel frame alone, so latent frame 0 covers [0, 1) and frame k covers
    [8k - 7, 8k + 1).
    """
    shape = [1] * latent_coords.ndim
    shape[1] = -1
    pixel_coords = latent_coords * mx.array(tuple(scale_factors), dtype=latent_coords.dtype).reshape(shape)
    if causal_fix:
        time = mx.maximum(pixel_coords[:, 0:1] + 1 - scale_factors[0], 0)
        pixel_coords = mx.concatenate([time, pixel_coords[:, 1:]], axis=1)
    return pixel_coords


class AudioPatchifier(Patchifier):
    """(B, C, T, F) <-> (B, T, C·F): one token per latent frame, positions in seconds.

    sample_rate / hop_length / audio_latent_downsample_factor map latent frames to seconds;
    `is_causal` shifts them so a timestamp never looks ahead of the samples it covers; `shift`
    offsets the latent indices (windows of a longer sequence).
    """

    def __init__(
        self,
        patch_size: int,
        sample_rate: int = 16000,
        hop_length: int = 160,
        audio_latent_downsample_factor: int = 4,
        is_causal: bool = True,
        shift: int = 0,
    ):
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.audio_latent_downsample_factor = audio_latent_downsample_factor
        self.is_causal = is_causal
        self.shift = shift
        self._patch_size = (1, patch_size, patch_size)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self._patch_size

    def get_token_count(self, tgt_shape: AudioLatentShape) -> int:
        return tgt_shape.frames

    def _get_audio_latent_time_in_sec(self, start_latent: int, end_latent: int) -> mx.array:
        mel_frame = mx.arange(start_latent, end_latent, dtype=mx.float32) * self.audio_latent_downsample_factor
        if self.is_causal:
            # +1: the timestamp of the first sample fully available to the causal encoder.
            mel_frame = mx.maximum(mel_frame + 1 - self.audio_latent_downsample_factor, 0)
        return mel_frame * self.hop_length / self.sample_rate

    def _compute_audio_timings(self, batch_size: int, num_steps: int) -> mx.array:
        starts = self._get_audio_latent_time_in_sec(self.shift, num_steps + self.shift)
        ends = self._get_audio_latent_time_in_sec(self.shift + 1, num_steps + self.shift + 1)
        timings = mx.stack([starts, ends], axis=-1)  # (T, 2)
        return mx.broadcast_to(timings[None, None], (batch_size, 1, num_steps, 2))

    def patchify(self, audio_latents: mx.array) -> mx.array:
        b, c, t, f = audio_latents.shape
        return audio_latents.transpose(0, 2, 1, 3).reshape(b, t, c * f)

    def unpatchify(self, audio_latents: mx.array, output_shape: AudioLatentShape) -> mx.array:
        b, t, _ = audio_latents.shape
        x = audio_latents.reshape(b, t, output_shape.channels, output_shape.mel_bins)
        return x.transpose(0, 2, 1, 3)

    def get_patch_grid_bounds(self, output_shape: AudioLatentShape) -> mx.array:
        """(B, 1, T, 2) float32 [start, end) of each latent frame in seconds."""
        if not isinstance(output_shape, AudioLatentShape):
            raise ValueError("AudioPatchifier expects an AudioLatentShape when computing coordinates")
        return self._compute_audio_timings(output_shape.batch, output_shape.frames)

"""Shapes and the latent state carried through denoising (ltx-core's `types.py`).

Latents keep the reference's layout: video (B, C, F, H, W), audio (B, C, T, mel_bins); once
patchified, (B, tokens, features).
"""

from dataclasses import dataclass
from typing import NamedTuple

import mlx.core as mx


class VideoPixelShape(NamedTuple):
    batch: int
    frames: int
    height: int
    width: int
    fps: float


class SpatioTemporalScaleFactors(NamedTuple):
    """Downscaling from decoded pixels to the VAE latent grid, per axis."""

    time: int
    width: int
    height: int

    @classmethod
    def default(cls) -> "SpatioTemporalScaleFactors":
        return cls(time=8, width=32, height=32)


VIDEO_SCALE_FACTORS = SpatioTemporalScaleFactors.default()


class VideoLatentShape(NamedTuple):
    """(batch, channels, frames, height, width) of a video latent."""

    batch: int
    channels: int
    frames: int
    height: int
    width: int

    def to_shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.channels, self.frames, self.height, self.width)

    @staticmethod
    def from_shape(shape) -> "VideoLatentShape":
        if len(shape) != 5:
            raise ValueError(f"a video latent is (B, C, F, H, W), got shape {tuple(shape)}")
        return VideoLatentShape(*(int(s) for s in shape))

    def token_count(self) -> int:
        """Tokens after patchifying with patch size 1."""
        return self.frames * self.height * self.width

    def mask_shape(self) -> "VideoLatentShape":
        return self._replace(channels=1)

    @staticmethod
    def from_pixel_shape(
        shape: VideoPixelShape,
        latent_channels: int = 128,
        scale_factors: SpatioTemporalScaleFactors = VIDEO_SCALE_FACTORS,
    ) -> "VideoLatentShape":
        return VideoLatentShape(
            batch=shape.batch,
            channels=latent_channels,
            frames=(shape.frames - 1) // scale_factors[0] + 1,
            height=shape.height // scale_factors[1],
            width=shape.width // scale_factors[2],
        )

    def upscale(self, scale_factors: SpatioTemporalScaleFactors = VIDEO_SCALE_FACTORS) -> "VideoLatentShape":
        return self._replace(
            channels=3,
            frames=(self.frames - 1) * scale_factors.time + 1,
            height=self.height * scale_factors.height,
            width=self.width * scale_factors.width,
        )


class AudioLatentShape(NamedTuple):
    """(batch, channels, frames, mel_bins) of an audio latent."""

    batch: int
    channels: int
    frames: int
    mel_bins: int

    def to_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.frames, self.mel_bins)

    @staticmethod
    def from_shape(shape) -> "AudioLatentShape":
        if len(shape) != 4:
            raise ValueError(f"an audio latent is (B, C, T, mel_bins), got shape {tuple(shape)}")
        return AudioLatentShape(*(int(s) for s in shape))

    def token_count(self) -> int:
        return self.frames

    def mask_shape(self) -> "AudioLatentShape":
        return self._replace(channels=1, mel_bins=1)

    @staticmethod
    def from_duration(
        batch: int,
        duration: float,
        channels: int = 8,
        mel_bins: int = 16,
        sample_rate: int = 16000,
        hop_length: int = 160,
        audio_latent_downsample_factor: int = 4,
    ) -> "AudioLatentShape":
        latents_per_second = float(sample_rate) / float(hop_length) / float(audio_latent_downsample_factor)
        return AudioLatentShape(
            batch=batch, channels=channels, frames=round(duration * latents_per_second), mel_bins=mel_bins
        )

    @staticmethod
    def from_video_pixel_shape(shape: VideoPixelShape, **layout) -> "AudioLatentShape":
        """The audio latent lasting as long as the video; `layout` takes from_duration's options."""
        return AudioLatentShape.from_duration(shape.batch, shape.frames / shape.fps, **layout)


@dataclass(frozen=True)
class LatentState:
    """One stream's state during denoising.

    latent: the current noisy latent. denoise_mask: per-token denoising strength (1 = denoise
    fully, 0 = keep clean_latent). positions: per-token [start, end) coordinates for RoPE.
    clean_latent: the latent before noising, conditioning included. attention_mask: (B, T, T)
    in [0, 1] built by conditioning items, None for full attention.

    MLX arrays are immutable, so unlike the reference there is no `clone()`: every update
    makes a new state with `dataclasses.replace`.
    """

    latent: mx.array
    denoise_mask: mx.array
    positions: mx.array
    clean_latent: mx.array
    attention_mask: mx.array | None = None

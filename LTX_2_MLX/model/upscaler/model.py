import math
from dataclasses import dataclass, fields
from typing import Protocol

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.upscaler.pixel_shuffle import pixel_shuffle
from LTX_2_MLX.model.upscaler.res_block import ResBlock, conv_nd, group_norm
from LTX_2_MLX.model.upscaler.spatial_rational_resampler import RATIONAL_SCALES, SpatialRationalResampler


@dataclass(frozen=True)
class LatentUpsamplerConfig:
    """The flat `config` of an upscaler file; defaults are ltx-core's configurator's.

    As in ltx-core, spatial+temporal files always use the ×2×2×2 pixel shuffle, and
    `spatial_scale` only matters with `rational_resampler` (the plain spatial path is ×2).
    """

    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    @classmethod
    def from_dict(cls, config: dict) -> "LatentUpsamplerConfig":
        known = {f.name for f in fields(cls)}
        if not isinstance(config, dict):
            raise ValueError(f"the config is a {type(config).__name__}, not a JSON object of upsampler settings")
        if not known & set(config):
            raise ValueError(
                f"the config has none of the latent upsampler's keys {sorted(known)} (it has {sorted(config)[:8]}); "
                "pass a latent upscaler file such as ltx-2-spatial-upscaler-x2-1.0.safetensors"
            )
        return cls(**{k: v for k, v in config.items() if k in known})

    def __post_init__(self):
        for name in ("in_channels", "mid_channels", "num_blocks_per_stage", "dims"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("spatial_upsample", "temporal_upsample", "rational_resampler"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        if isinstance(self.spatial_scale, bool) or not isinstance(self.spatial_scale, (int, float)):
            raise ValueError(f"spatial_scale={self.spatial_scale!r} must be a number, e.g. 2.0")
        if self.dims not in (2, 3):
            raise ValueError(f"dims={self.dims} must be 2 (per-frame) or 3 (video) convolutions")
        if self.mid_channels % 32:
            raise ValueError(f"mid_channels={self.mid_channels} must be a multiple of 32 (GroupNorm's 32 groups)")
        if not (self.spatial_upsample or self.temporal_upsample):
            raise ValueError("spatial_upsample and temporal_upsample are both false: set at least one to true")
        if self.uses_rational_resampler and float(self.spatial_scale) not in RATIONAL_SCALES:
            raise ValueError(
                f"spatial_scale={self.spatial_scale} has no rational resampler; use one of {sorted(RATIONAL_SCALES)}"
            )
        if self.dims == 2 and (self.temporal_upsample or self.rational_resampler):
            # ltx-core cannot run these either: its per-frame path feeds 4D frames to a Conv3d
            # (temporal) or to a resampler that unpacks five axes (rational).
            raise ValueError(
                "dims=2 (per-frame) upsamplers support only spatial ×2 pixel shuffle; "
                "set temporal_upsample and rational_resampler to false, or use dims=3"
            )

    @property
    def uses_rational_resampler(self) -> bool:
        return self.spatial_upsample and not self.temporal_upsample and self.rational_resampler


class PixelShuffleUpsampler(nn.Module):
    """A convolution to prod(factors)× channels, shuffled into the leading spatial axes
    (ltx-core's Sequential(conv, PixelShuffleND))."""

    def __init__(self, dims: int, channels: int, upscale_factors: tuple[int, ...]):
        super().__init__()
        self.upscale_factors = upscale_factors
        self.conv = conv_nd(dims, channels, channels * math.prod(upscale_factors))

    def __call__(self, x: mx.array) -> mx.array:
        return pixel_shuffle(self.conv(x), self.upscale_factors)


def _per_frame(module: nn.Module, x: mx.array) -> mx.array:
    """Apply a 2D module to each frame of (B, F, H, W, C) by folding frames into the batch."""
    if x.ndim == 4:
        return module(x)
    b, f = x.shape[:2]
    y = module(x.reshape(b * f, *x.shape[2:]))
    return y.reshape(b, f, *y.shape[1:])


class LatentUpsampler(nn.Module):
    """Upsamples VAE latents spatially and/or temporally: (B, C, F, H, W) in and out.

    Spatial ×2 gives (B, C, F, 2H, 2W); rational ×s gives about s·H, s·W; temporal ×2 gives
    2F - 1 frames (the first latent frame stands for one pixel frame, so its twin is dropped).
    """

    def __init__(self, config: LatentUpsamplerConfig):
        super().__init__()
        self.config = config
        dims, mid = config.dims, config.mid_channels
        self.initial_conv = conv_nd(dims, config.in_channels, mid)
        self.initial_norm = group_norm(mid)
        self.res_blocks = [ResBlock(mid, dims=dims) for _ in range(config.num_blocks_per_stage)]
        if config.spatial_upsample and config.temporal_upsample:
            self.upsampler = PixelShuffleUpsampler(3, mid, (2, 2, 2))
        elif config.temporal_upsample:
            self.upsampler = PixelShuffleUpsampler(3, mid, (2,))
        elif config.uses_rational_resampler:
            self.upsampler = SpatialRationalResampler(mid, config.spatial_scale)
        else:
            self.upsampler = PixelShuffleUpsampler(2, mid, (2, 2))
        self.post_upsample_res_blocks = [ResBlock(mid, dims=dims) for _ in range(config.num_blocks_per_stage)]
        self.final_conv = conv_nd(dims, mid, config.in_channels)

    def __call__(self, latent: mx.array) -> mx.array:
        if latent.ndim != 5 or latent.shape[1] != self.config.in_channels:
            raise ValueError(
                f"latent of shape {tuple(latent.shape)}: expected (B, {self.config.in_channels}, F, H, W), "
                "the video VAE's latent layout"
            )
        b, _, f, _, _ = latent.shape
        x = latent.transpose(0, 2, 3, 4, 1)
        if self.config.dims == 2:
            x = x.reshape(b * f, *x.shape[2:])

        x = nn.silu(self.initial_norm(self.initial_conv(x)))
        for block in self.res_blocks:
            x = block(x)
        if self.config.temporal_upsample:
            x = self.upsampler(x)[:, 1:]
        else:
            x = _per_frame(self.upsampler, x)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        x = self.final_conv(x)

        if self.config.dims == 2:
            x = x.reshape(b, f, *x.shape[1:])
        return x.transpose(0, 4, 1, 2, 3)

    @staticmethod
    def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """ltx-core's state dict in this module's layout: convolution weights (and the blur
        kernel) channels-last, (O, I, *k) -> (O, *k, I); the Sequential's `0` named `conv`."""
        sanitized = {}
        for key, value in weights.items():
            if key.startswith("upsampler.0."):
                key = "upsampler.conv." + key.removeprefix("upsampler.0.")
            if value.ndim >= 4:
                value = mx.contiguous(mx.moveaxis(value, 1, -1))
            sanitized[key] = value
        return sanitized


class LatentStatistics(Protocol):
    """The video VAE's per-channel latent statistics (its `per_channel_statistics`)."""

    def normalize(self, x: mx.array) -> mx.array: ...

    def un_normalize(self, x: mx.array) -> mx.array: ...


def upsample_latent(latent: mx.array, upscaler: LatentUpsampler, vae_statistics: LatentStatistics) -> mx.array:
    """Upsample a normalised (B, C, F, H, W) latent: the upscaler works on raw VAE latents, so
    un-normalise first and normalise again after (ltx-core's `upsample_video`)."""
    latent = vae_statistics.un_normalize(latent)
    latent = upscaler(latent)
    return vae_statistics.normalize(latent)

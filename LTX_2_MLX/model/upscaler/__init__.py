"""LTX-2 latent upsamplers: spatial ×2 / rational ×1.5, temporal ×2, both, and per-frame 2D."""

from LTX_2_MLX.model.upscaler.model import LatentUpsampler, LatentUpsamplerConfig, upsample_latent

__all__ = ["LatentUpsampler", "LatentUpsamplerConfig", "upsample_latent"]

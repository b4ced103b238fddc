"""LTX-2 causal video VAE: 8× temporal, 32× spatial compression to 128 latent channels."""

from LTX_2_MLX.model.video_vae.config import VideoVAEConfig
from LTX_2_MLX.model.video_vae.ops import PerChannelStatistics
from LTX_2_MLX.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
from LTX_2_MLX.model.video_vae.video_vae import VideoDecoder, VideoEncoder, VideoVAE, decode_video

__all__ = [
    "PerChannelStatistics",
    "SpatialTilingConfig",
    "TemporalTilingConfig",
    "TilingConfig",
    "VideoDecoder",
    "VideoEncoder",
    "VideoVAE",
    "VideoVAEConfig",
    "decode_video",
]

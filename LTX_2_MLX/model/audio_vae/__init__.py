"""LTX-2 audio VAE (log-mel <-> latent) and vocoder (mel -> stereo waveform)."""

from LTX_2_MLX.model.audio_vae.audio_vae import (
    AudioDecoder,
    AudioEncoder,
    AudioVAE,
    decode_audio,
    encode_audio,
)
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.model_configurator import (
    AudioVAEConfig,
    GeneratorConfig,
    VocoderConfig,
)
from LTX_2_MLX.model.audio_vae.ops import Audio, AudioProcessor, PerChannelStatistics
from LTX_2_MLX.model.audio_vae.vocoder import Vocoder, VocoderWithBWE, build_vocoder

__all__ = [
    "Audio",
    "AudioDecoder",
    "AudioEncoder",
    "AudioProcessor",
    "AudioVAE",
    "AudioVAEConfig",
    "CausalityAxis",
    "GeneratorConfig",
    "PerChannelStatistics",
    "Vocoder",
    "VocoderConfig",
    "VocoderWithBWE",
    "build_vocoder",
    "decode_audio",
    "encode_audio",
]

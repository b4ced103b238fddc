"""Latent states: the layout a pipeline's stages share, and empty (or given) latents with their
conditioning applied and noise added (ltx-pipelines `utils/helpers.py`)."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from LTX_2_MLX.components.tools import AudioLatentTools, LatentTools, VideoLatentTools
from LTX_2_MLX.components.types import (
    VIDEO_SCALE_FACTORS,
    AudioLatentShape,
    LatentState,
    SpatioTemporalScaleFactors,
    VideoLatentShape,
    VideoPixelShape,
)
from LTX_2_MLX.conditioning.item import ConditioningItem


@dataclass
class PipelineComponents:
    """Latent layout shared by a pipeline's stages: channels, VAE scale factors, patchifiers."""

    video_latent_channels: int = 128
    video_scale_factors: SpatioTemporalScaleFactors = VIDEO_SCALE_FACTORS
    audio_latent_channels: int = 8
    audio_mel_bins: int = 16
    video_patchifier: VideoLatentPatchifier = field(default_factory=lambda: VideoLatentPatchifier(patch_size=1))
    audio_patchifier: AudioPatchifier = field(default_factory=lambda: AudioPatchifier(patch_size=1))

    @classmethod
    def for_transformer(cls, config, audio_latent_channels: int = 8) -> "PipelineComponents":
        """The layout a DiT config (`LTXModelConfig`) expects: video channels are its
        in_channels; audio tokens are channels x mel bins wide, so its audio_in_channels must
        split into `audio_latent_channels` channels."""
        audio_features = getattr(config, "audio_in_channels", None)
        if audio_features is None or not config.model_type.has_audio:
            return cls(video_latent_channels=config.in_channels)
        if audio_features % audio_latent_channels:
            raise ValueError(
                f"the transformer's audio_in_channels={audio_features} is not a multiple of "
                f"audio_latent_channels={audio_latent_channels}; pass the audio VAE's latent channels"
            )
        return cls(
            video_latent_channels=config.in_channels,
            audio_latent_channels=audio_latent_channels,
            audio_mel_bins=audio_features // audio_latent_channels,
        )


def video_latent_shape(output_shape: VideoPixelShape, components: PipelineComponents) -> VideoLatentShape:
    return VideoLatentShape.from_pixel_shape(
        shape=output_shape, latent_channels=components.video_latent_channels,
        scale_factors=components.video_scale_factors,
    )  # fmt: skip


def audio_latent_shape(output_shape: VideoPixelShape, components: PipelineComponents) -> AudioLatentShape:
    """The audio latent lasting as long as the video."""
    patchifier = components.audio_patchifier
    return AudioLatentShape.from_video_pixel_shape(
        output_shape, channels=components.audio_latent_channels, mel_bins=components.audio_mel_bins,
        sample_rate=patchifier.sample_rate, hop_length=patchifier.hop_length,
        audio_latent_downsample_factor=patchifier.audio_latent_downsample_factor,
    )  # fmt: skip


def state_with_conditionings(
    latent_state: LatentState, conditioning_items: Sequence[ConditioningItem], latent_tools: LatentTools
) -> LatentState:
    for conditioning in conditioning_items:
        latent_state = conditioning.apply_to(latent_state=latent_state, latent_tools=latent_tools)
    return latent_state


def create_noised_state(
    tools: LatentTools,
    conditionings: Sequence[ConditioningItem],
    noiser: Noiser,
    dtype: mx.Dtype,
    noise_scale: float | mx.array = 1.0,
    initial_latent: mx.array | None = None,
) -> LatentState:
    """Empty (or `initial_latent`) state -> conditioning -> noise."""
    state = tools.create_initial_state(dtype, initial_latent)
    state = state_with_conditionings(state, conditionings, tools)
    return noiser(state, noise_scale)


def noise_video_state(
    output_shape: VideoPixelShape,
    noiser: Noiser,
    conditionings: Sequence[ConditioningItem],
    components: PipelineComponents,
    dtype: mx.Dtype,
    noise_scale: float | mx.array = 1.0,
    initial_latent: mx.array | None = None,
) -> tuple[LatentState, VideoLatentTools]:
    video_tools = VideoLatentTools(
        components.video_patchifier, video_latent_shape(output_shape, components), output_shape.fps,
        scale_factors=components.video_scale_factors,
    )  # fmt: skip
    state = create_noised_state(video_tools, conditionings, noiser, dtype, noise_scale, initial_latent)
    return state, video_tools


def noise_audio_state(
    output_shape: VideoPixelShape,
    noiser: Noiser,
    conditionings: Sequence[ConditioningItem],
    components: PipelineComponents,
    dtype: mx.Dtype,
    noise_scale: float | mx.array = 1.0,
    initial_latent: mx.array | None = None,
) -> tuple[LatentState, AudioLatentTools]:
    audio_tools = AudioLatentTools(components.audio_patchifier, audio_latent_shape(output_shape, components))
    state = create_noised_state(audio_tools, conditionings, noiser, dtype, noise_scale, initial_latent)
    return state, audio_tools


def post_process_latent(denoised: mx.array, denoise_mask: mx.array, clean: mx.array) -> mx.array:
    """Keep the clean latent where the mask is 0 (conditioning), the prediction where it is 1."""
    blended = denoised * denoise_mask + clean.astype(mx.float32) * (1 - denoise_mask)
    return blended.astype(denoised.dtype)


def timesteps_from_mask(denoise_mask: mx.array, sigma: float | mx.array) -> mx.array:
    """Per-token noise level: sigma where a token is denoised, 0 where it is kept clean."""
    return denoise_mask * sigma

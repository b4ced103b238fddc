"""What the pipelines share besides the denoising loop: inputs, size checks, default
parameters, image conditionings and the decode step."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.diffusion_steps import EulerDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuiderFactory, MultiModalGuiderParams
from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.types import LatentState, VideoPixelShape
from LTX_2_MLX.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
from LTX_2_MLX.loader.checkpoint import read_metadata
from LTX_2_MLX.model.video_vae import TilingConfig, decode_video
from LTX_2_MLX.pipelines.denoising import PipelineComponents, denoise_audio_video
from LTX_2_MLX.pipelines.media_io import DEFAULT_IMAGE_CRF, load_image_conditioning
from LTX_2_MLX.pipelines.model_ledger import ModelLedger

DEFAULT_NEGATIVE_PROMPT = json.loads((Path(__file__).parent / "default_negative_prompt.json").read_text())[
    "negative_prompt"
]


@dataclass(frozen=True)
class ImageConditioningInput:
    """An image to hold at a pixel frame: frame 0 replaces the first latent, later frames
    are added as keyframe tokens."""

    path: str
    frame_idx: int = 0
    strength: float = 1.0
    crf: float = DEFAULT_IMAGE_CRF


@dataclass(frozen=True)
class PipelineParams:
    """The reference's defaults (ltx-pipelines `utils/constants.py`)."""

    seed: int = 10
    height: int = 512
    width: int = 768
    num_frames: int = 121
    frame_rate: float = 24.0
    num_inference_steps: int = 40
    video_guider_params: MultiModalGuiderParams = field(
        default_factory=lambda: MultiModalGuiderParams(
            cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
        )
    )
    audio_guider_params: MultiModalGuiderParams = field(
        default_factory=lambda: MultiModalGuiderParams(
            cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
        )
    )


LTX_2_PARAMS = PipelineParams()
LTX_2_3_PARAMS = replace(
    LTX_2_PARAMS,
    num_inference_steps=30,
    video_guider_params=replace(LTX_2_PARAMS.video_guider_params, stg_blocks=[28]),
    audio_guider_params=replace(LTX_2_PARAMS.audio_guider_params, stg_blocks=[28]),
)


def detect_params(checkpoint_path: str | Path) -> PipelineParams:
    """LTX-2.3 defaults when the checkpoint's metadata says model_version 2.3.x."""
    version = read_metadata(checkpoint_path).get("model_version", "")
    return LTX_2_3_PARAMS if version.startswith("2.3") else LTX_2_PARAMS


def check_generation_size(height: int, width: int, num_frames: int, divisor: int = 32) -> None:
    """The VAE compresses 32x in space and 8x in time (after a first frame of its own)."""
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise ValueError(
            f"height={height}, width={width}: both must be positive multiples of {divisor}, "
            f"e.g. {max(divisor, round(height / divisor) * divisor)}x{max(divisor, round(width / divisor) * divisor)}"
        )
    if num_frames < 1 or (num_frames - 1) % 8:
        suggestion = max(1, round((num_frames - 1) / 8)) * 8 + 1
        raise ValueError(f"num_frames={num_frames} must be 8k+1, e.g. {suggestion}")


def image_conditionings(
    images: list[ImageConditioningInput], height: int, width: int, video_encoder, dtype: mx.Dtype,
    all_as_keyframes: bool = False,
) -> list:  # fmt: skip
    """Encode each image and place it: frame 0 replaces the first latent, others become
    keyframe tokens; with all_as_keyframes every image guides as a keyframe (interpolation)."""
    conditionings = []
    for image in images:
        encoded = video_encoder(load_image_conditioning(image.path, height, width, image.crf).astype(dtype))
        if image.frame_idx == 0 and not all_as_keyframes:
            conditionings.append(VideoConditionByLatentIndex(latent=encoded, strength=image.strength, latent_idx=0))
        else:
            conditionings.append(
                VideoConditionByKeyframeIndex(keyframes=encoded, frame_idx=image.frame_idx, strength=image.strength)
            )
        mx.eval(encoded)
    return conditionings


@dataclass
class GeneratedVideo:
    """Decoded frames as (F, H, W, 3) uint8 chunks (yielded as they are decoded), and the
    waveform (channels, samples) with its sample rate when the model makes audio."""

    frames: Iterator[np.ndarray]
    fps: float
    audio: tuple[np.ndarray, int] | None
    chunks: int = 1


def encode_images(
    ledger: ModelLedger, images: list[ImageConditioningInput], shape: VideoPixelShape, all_as_keyframes: bool = False
) -> list:
    """The images' conditioning items at `shape`'s size; the VAE encoder is loaded only when
    there are images, and dropped after."""
    if not images:
        return []
    return image_conditionings(list(images), shape.height, shape.width, ledger.video_encoder(), ledger.dtype,
                               all_as_keyframes)  # fmt: skip


def pipeline_components(ledger: ModelLedger, transformer) -> PipelineComponents:
    return PipelineComponents.for_transformer(
        transformer.velocity_model.config, audio_latent_channels=ledger.audio_latent_channels
    )


def denoise_stage(
    ledger: ModelLedger, transformer, shape: VideoPixelShape, contexts: tuple[mx.array, mx.array], sigmas: mx.array,
    noiser: Noiser, conditionings: list = (), guiders: tuple[MultiModalGuiderFactory | None, ...] = (None, None),
    **refinement,
) -> tuple[LatentState, LatentState]:  # fmt: skip
    """One Euler pass of the shared loop, evaluated. `refinement`: noise_scale and the
    initial latents when refining instead of starting from noise."""
    states = denoise_audio_video(
        shape, transformer, *contexts, sigmas, EulerDiffusionStep(), noiser, conditionings=conditionings,
        video_guider=guiders[0], audio_guider=guiders[1], components=pipeline_components(ledger, transformer),
        dtype=ledger.dtype, **refinement,
    )  # fmt: skip
    mx.eval(states[0].latent, states[1].latent)
    return states


def decode_outputs(
    ledger: ModelLedger, video_latent: mx.array, audio_latent: mx.array | None, fps: float, seed: int,
    tiling: TilingConfig | None,
) -> GeneratedVideo:  # fmt: skip
    """Audio is decoded first (small), then video frames are decoded lazily, chunk by chunk."""
    mx.clear_cache()
    audio = None
    if audio_latent is not None and ledger.has_audio:
        from LTX_2_MLX.model.audio_vae import decode_audio

        decoder, vocoder = ledger.audio_decoder_and_vocoder()
        decoded = decode_audio(audio_latent, decoder, vocoder)
        audio = (np.array(decoded.waveform), decoded.sampling_rate)
        del decoder, vocoder
    frames = (np.array(chunk) for chunk in decode_video(video_latent, ledger.video_decoder(), tiling, mx.random.key(seed)))
    return GeneratedVideo(frames=frames, fps=fps, audio=audio)

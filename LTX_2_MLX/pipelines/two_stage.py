"""Two-stage generation: the video is made at half size, its latent upscaled x2 with the
spatial upscaler, then refined at full size with the short stage-2 distilled schedule
(ltx-pipelines `distilled.py`, `ti2vid_two_stages.py`, `keyframe_interpolation.py`)."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser, Noiser
from LTX_2_MLX.components.schedulers import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES, LTX2Scheduler
from LTX_2_MLX.components.types import LatentState, VideoPixelShape
from LTX_2_MLX.model.upscaler import upsample_latent
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    check_generation_size,
    decode_outputs,
    denoise_stage,
    encode_images,
)
from LTX_2_MLX.pipelines.model_ledger import ModelLedger


def half_and_full_shapes(height: int, width: int, num_frames: int, frame_rate: float) -> tuple[VideoPixelShape, ...]:
    check_generation_size(height, width, num_frames, divisor=64)
    full = VideoPixelShape(batch=1, frames=num_frames, height=height, width=width, fps=frame_rate)
    return full._replace(height=height // 2, width=width // 2), full


def refine_upscaled(
    ledger: ModelLedger, transformer, stage_1: tuple[LatentState, LatentState], contexts: tuple[mx.array, mx.array],
    images: list[ImageConditioningInput], shape: VideoPixelShape, noiser: Noiser, all_as_keyframes: bool = False,
) -> tuple[LatentState, LatentState]:  # fmt: skip
    """Stage 2: upscale the half-size video latent x2, re-noise it to the first stage-2 sigma
    and denoise it (with the stage-1 audio) at full size, unguided."""
    video_state, audio_state = stage_1
    statistics = ledger.video_encoder().per_channel_statistics
    upscaled = upsample_latent(video_state.latent[:1], ledger.spatial_upscaler(), statistics)
    sigmas = mx.array(STAGE_2_DISTILLED_SIGMA_VALUES)
    return denoise_stage(
        ledger, transformer, shape, contexts, sigmas, noiser, encode_images(ledger, images, shape, all_as_keyframes),
        noise_scale=sigmas[0], initial_video_latent=upscaled, initial_audio_latent=audio_state.latent,
    )  # fmt: skip


class DistilledPipeline:
    """A distilled checkpoint: 8 fixed-sigma steps at half size, then the stage-2 refinement
    with the same model, no guidance."""

    def __init__(self, ledger: ModelLedger, tiling: TilingConfig | None = None):
        self.ledger = ledger
        self.tiling = tiling

    def __call__(
        self, prompt: str, seed: int, height: int, width: int, num_frames: int, frame_rate: float,
        images: list[ImageConditioningInput] = (), enhance_prompt: bool = False, noiser: Noiser | None = None,
    ) -> GeneratedVideo:  # fmt: skip
        """`noiser` replaces the seed's Gaussian noise (both stages draw from it)."""
        ledger = self.ledger
        half, full = half_and_full_shapes(height, width, num_frames, frame_rate)
        ((video_context, audio_context, _),) = ledger.encode_prompts(
            [prompt], enhance_first_prompt=enhance_prompt, image=images[0].path if images else None, seed=seed
        )
        contexts, noiser = (video_context, audio_context), noiser or GaussianNoiser(seed)
        conditionings = encode_images(ledger, images, half)
        transformer = ledger.transformer()
        stage_1 = denoise_stage(ledger, transformer, half, contexts, mx.array(DISTILLED_SIGMA_VALUES), noiser, conditionings)
        video_state, audio_state = refine_upscaled(ledger, transformer, stage_1, contexts, images, full, noiser)
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)


class TI2VidTwoStagesPipeline:
    """A full (dev) checkpoint: guided generation at half size with the LTX-2 schedule, then
    the stage-2 refinement with the distilled LoRA fused in."""

    images_as_keyframes = False

    def __init__(self, ledger: ModelLedger, distilled_lora: list[tuple[str, float]], tiling: TilingConfig | None = None):
        self.ledger = ledger
        self.stage_2_ledger = replace(ledger, loras=[*ledger.loras, *distilled_lora])
        self.tiling = tiling

    def __call__(
        self, prompt: str, negative_prompt: str, seed: int, height: int, width: int, num_frames: int,
        frame_rate: float, num_inference_steps: int, video_guider_params: MultiModalGuiderParams,
        audio_guider_params: MultiModalGuiderParams, images: list[ImageConditioningInput] = (),
        enhance_prompt: bool = False, noiser: Noiser | None = None,
    ) -> GeneratedVideo:  # fmt: skip
        ledger = self.ledger
        half, full = half_and_full_shapes(height, width, num_frames, frame_rate)
        (video_context, audio_context, _), (negative_video, negative_audio, _) = ledger.encode_prompts(
            [prompt, negative_prompt], enhance_first_prompt=enhance_prompt,
            image=images[0].path if images else None, seed=seed,
        )  # fmt: skip
        contexts, noiser = (video_context, audio_context), noiser or GaussianNoiser(seed)
        conditionings = encode_images(ledger, images, half, self.images_as_keyframes)
        guiders = (
            create_multimodal_guider_factory(video_guider_params, negative_video),
            create_multimodal_guider_factory(audio_guider_params, negative_audio),
        )
        transformer = ledger.transformer()
        sigmas = LTX2Scheduler().execute(steps=num_inference_steps)
        stage_1 = denoise_stage(ledger, transformer, half, contexts, sigmas, noiser, conditionings, guiders)
        del transformer
        transformer = self.stage_2_ledger.transformer()
        video_state, audio_state = refine_upscaled(
            self.stage_2_ledger, transformer, stage_1, contexts, images, full, noiser, self.images_as_keyframes
        )
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)


class KeyframeInterpolationPipeline(TI2VidTwoStagesPipeline):
    """Two-stage generation between keyframe images: every image, the first included, guides
    as keyframe tokens at its frame instead of replacing latents (ltx-pipelines
    `keyframe_interpolation.py`)."""

    images_as_keyframes = True

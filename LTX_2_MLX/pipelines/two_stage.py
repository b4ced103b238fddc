"""Two-stage generation: the video is made at half size, its latent upscaled x2 with the
spatial upscaler, then refined at full size with the short stage-2 distilled schedule
(ltx-pipelines `distilled.py`, `ti2vid_two_stages.py`, `keyframe_interpolation.py`)."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import DISTILLED_SIGMA_VALUES, LTX2Scheduler
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    denoise_stage,
    encode_images,
    half_and_full_shapes,
    refine_upscaled,
)
from LTX_2_MLX.pipelines.request import GenerationRequest


class DistilledPipeline(Pipeline):
    """A distilled checkpoint: 8 fixed-sigma steps at half size, then the stage-2 refinement
    with the same model, no guidance."""

    name = "distilled"
    summary = "a distilled checkpoint: 8 + 3 unguided steps, half size then upscaled"
    size_multiple, two_stage, guided, needs_spatial_upscaler = 64, True, False, True
    enhance_prompt_seed = 42  # ltx-pipelines passes no seed to the enhancement here

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger, audio = self.ledger, request.generate_audio
        half, full = half_and_full_shapes(request)
        contexts = self.encode_prompts(request).positive
        conditionings = encode_images(ledger, request.images, half)
        transformer = ledger.transformer()
        stage_1 = denoise_stage(
            ledger, transformer, half, contexts, mx.array(DISTILLED_SIGMA_VALUES), noiser, conditionings,
            generate_audio=audio, on_step=self.stage_progress("stage 1"),
        )  # fmt: skip
        video_state, audio_state = refine_upscaled(
            ledger, transformer, stage_1, contexts, request.images, full, noiser, generate_audio=audio,
            on_step=self.stage_progress("stage 2"),
        )  # fmt: skip
        del transformer
        return self.decode(request, video_state.latent, audio_state.latent)


class TI2VidTwoStagesPipeline(Pipeline):
    """A full (dev) checkpoint: guided generation at half size with the LTX-2 schedule, then
    the stage-2 refinement with the distilled LoRA fused in."""

    name = "two-stage"
    summary = "guided at half size, latent x2 upscale, 3 refining steps with the distilled LoRA"
    size_multiple, two_stage, needs_spatial_upscaler, needs_distilled_lora = 64, True, True, True
    images_as_keyframes = False

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger, audio = self.ledger, request.generate_audio
        half, full = half_and_full_shapes(request)
        prompts = self.encode_prompts(request)
        conditionings = encode_images(ledger, request.images, half, self.images_as_keyframes)
        transformer = ledger.transformer()
        sigmas = LTX2Scheduler().execute(steps=request.num_inference_steps)
        stage_1 = denoise_stage(
            ledger, transformer, half, prompts.positive, sigmas, noiser, conditionings, self.guiders(request, prompts),
            generate_audio=audio, on_step=self.stage_progress("stage 1"),
        )  # fmt: skip
        del transformer
        stage_2_ledger = replace(ledger, loras=[*ledger.loras, request.distilled_lora])
        transformer = stage_2_ledger.transformer()
        video_state, audio_state = refine_upscaled(
            stage_2_ledger, transformer, stage_1, prompts.positive, request.images, full, noiser,
            self.images_as_keyframes, generate_audio=audio, on_step=self.stage_progress("stage 2"),
        )  # fmt: skip
        del transformer
        return self.decode(request, video_state.latent, audio_state.latent)


class KeyframeInterpolationPipeline(TI2VidTwoStagesPipeline):
    """Two-stage generation between keyframe images: every image, the first included, guides
    as keyframe tokens at its frame instead of replacing latents (ltx-pipelines
    `keyframe_interpolation.py`)."""

    name = "keyframes"
    summary = "two-stage interpolation: every --image guides as a keyframe at its frame"
    min_images = 2
    images_as_keyframes = True

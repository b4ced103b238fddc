"""Two-stage generation with the res_2s sampler (ltx-pipelines `ti2vid_two_stages_hq.py`): the
two-stage recipe (guided at half size, latent x2 upscale, refinement at full size), but every
stage takes second-order res_2s steps, so 15 guided steps do, and the distilled LoRA is fused
in both stages, lightly in the first (0.25) and more in the second (0.5)."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.diffusion_steps import Res2sDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import LTX2Scheduler
from LTX_2_MLX.components.types import VideoLatentShape
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    denoise_stage,
    encode_images,
    half_and_full_shapes,
    refine_upscaled,
)
from LTX_2_MLX.pipelines.denoising import NoiseFn, gaussian_sde_noise
from LTX_2_MLX.pipelines.request import GenerationRequest, PipelineParams

# ltx-pipelines `LTX_2_3_HQ_PARAMS` (a 544x960 first stage) and `hq_2_stage_arg_parser`.
HQ_PARAMS = PipelineParams(
    stage_1_height=544,
    stage_1_width=960,
    num_inference_steps=15,
    video_guider_params=MultiModalGuiderParams(
        cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=3.0, skip_step=0, stg_blocks=[]
    ),
    audio_guider_params=MultiModalGuiderParams(
        cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0, skip_step=0, stg_blocks=[]
    ),
)


def seeded_sde_noise(seed: int) -> tuple[NoiseFn, NoiseFn]:
    """res_2s's (step, substep) noise sources, both split from the generation seed."""
    step_key, substep_key = mx.random.split(mx.random.key(seed))
    return gaussian_sde_noise(step_key), gaussian_sde_noise(substep_key)


class TI2VidTwoStagesHQPipeline(Pipeline):
    """A full (dev) checkpoint: guided res_2s generation at half size on the token-count-shifted
    LTX-2 schedule, then the res_2s stage-2 refinement (unguided), each stage with the distilled
    LoRA fused at its own strength (stage 1: `distilled_lora_strength_stage_1`; stage 2: the
    strength given with `distilled_lora`)."""

    name = "two-stage-hq"
    summary = ("two-stage with the res_2s sampler (15 steps, no STG), the distilled LoRA in both stages; "
               "default 1920x1088")  # fmt: skip
    size_multiple, two_stage, needs_spatial_upscaler, needs_distilled_lora = 64, True, True, True
    defaults = HQ_PARAMS

    def __init__(self, ledger, tiling=None, sde_noise: NoiseFn | None = None):
        """`sde_noise` replaces the seed's res_2s noise (latent -> noise, drawn per step as
        substep video, substep audio, step video, step audio, through both stages)."""
        super().__init__(ledger, tiling)
        self.sde_noise = sde_noise

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger, audio = self.ledger, request.generate_audio
        path, stage_2_strength = request.distilled_lora
        stage_1_ledger = replace(ledger, loras=[*ledger.loras, (path, request.distilled_lora_strength_stage_1)])
        stage_2_ledger = replace(ledger, loras=[*ledger.loras, (path, stage_2_strength)])
        step_noise, substep_noise = (
            (self.sde_noise, self.sde_noise) if self.sde_noise is not None else seeded_sde_noise(request.seed)
        )
        res2s = dict(stepper=Res2sDiffusionStep(), step_noise_fn=step_noise, substep_noise_fn=substep_noise)

        half, full = half_and_full_shapes(request)
        prompts = self.encode_prompts(request)
        conditionings = encode_images(ledger, request.images, half)
        # The schedule shifts with the half-size latent's token count (only its shape is read).
        sigmas = LTX2Scheduler().execute(steps=request.num_inference_steps,
                                         latent=mx.zeros(VideoLatentShape.from_pixel_shape(half)))  # fmt: skip
        transformer = stage_1_ledger.transformer()
        stage_1 = denoise_stage(
            stage_1_ledger, transformer, half, prompts.positive, sigmas, noiser, conditionings,
            self.guiders(request, prompts), generate_audio=audio, on_step=self.stage_progress("stage 1"), **res2s,
        )  # fmt: skip
        del transformer
        transformer = stage_2_ledger.transformer()
        video_state, audio_state = refine_upscaled(
            stage_2_ledger, transformer, stage_1, prompts.positive, request.images, full, noiser,
            generate_audio=audio, on_step=self.stage_progress("stage 2"), **res2s,
        )  # fmt: skip
        del transformer
        return self.decode(request, video_state.latent, audio_state.latent)

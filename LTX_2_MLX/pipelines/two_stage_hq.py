"""Two-stage generation with the res_2s sampler (ltx-pipelines `ti2vid_two_stages_hq.py`): the
two-stage recipe (guided at half size, latent x2 upscale, refinement at full size), but every
stage takes second-order res_2s steps, so 15 guided steps do, and the distilled LoRA is fused
in both stages, lightly in the first (0.25) and more in the second (0.5)."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.diffusion_steps import Res2sDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser, Noiser
from LTX_2_MLX.components.schedulers import STAGE_2_DISTILLED_SIGMA_VALUES, LTX2Scheduler
from LTX_2_MLX.components.types import LatentState, VideoLatentShape, VideoPixelShape
from LTX_2_MLX.model.upscaler import upsample_latent
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    PipelineParams,
    decode_outputs,
    encode_images,
    pipeline_components,
)
from LTX_2_MLX.pipelines.denoising import NoiseFn, denoise_audio_video, gaussian_sde_noise
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.two_stage import half_and_full_shapes

# ltx-pipelines `LTX_2_3_HQ_PARAMS` (a 544x960 first stage) and `hq_2_stage_arg_parser`.
HQ_PARAMS = PipelineParams(
    height=1088,
    width=1920,
    num_inference_steps=15,
    video_guider_params=MultiModalGuiderParams(
        cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=3.0, skip_step=0, stg_blocks=[]
    ),
    audio_guider_params=MultiModalGuiderParams(
        cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0, skip_step=0, stg_blocks=[]
    ),
)
DISTILLED_LORA_STRENGTH_STAGE_1, DISTILLED_LORA_STRENGTH_STAGE_2 = 0.25, 0.5


def seeded_sde_noise(seed: int) -> tuple[NoiseFn, NoiseFn]:
    """res_2s's (step, substep) noise sources, both split from the generation seed."""
    step_key, substep_key = mx.random.split(mx.random.key(seed))
    return gaussian_sde_noise(step_key), gaussian_sde_noise(substep_key)


def denoise_stage_res2s(
    ledger: ModelLedger, transformer, shape: VideoPixelShape, contexts: tuple[mx.array, mx.array], sigmas: mx.array,
    noiser: Noiser, sde_noise: tuple[NoiseFn, NoiseFn], conditionings: list = (), guiders: tuple = (None, None),
    **refinement,
) -> tuple[LatentState, LatentState]:  # fmt: skip
    """One res_2s pass of the shared loop, evaluated (`denoise_stage` with the res_2s stepper)."""
    step_noise, substep_noise = sde_noise
    states = denoise_audio_video(
        shape, transformer, *contexts, sigmas, Res2sDiffusionStep(), noiser, conditionings=conditionings,
        video_guider=guiders[0], audio_guider=guiders[1], components=pipeline_components(ledger, transformer),
        dtype=ledger.dtype, step_noise_fn=step_noise, substep_noise_fn=substep_noise, **refinement,
    )  # fmt: skip
    mx.eval(states[0].latent, states[1].latent)
    return states


class TI2VidTwoStagesHQPipeline:
    """A full (dev) checkpoint: guided res_2s generation at half size on the token-count-shifted
    LTX-2 schedule, then the res_2s stage-2 refinement (unguided), each stage with the distilled
    LoRA fused at its own strength."""

    def __init__(
        self, ledger: ModelLedger, distilled_lora: str,
        distilled_lora_strength_stage_1: float = DISTILLED_LORA_STRENGTH_STAGE_1,
        distilled_lora_strength_stage_2: float = DISTILLED_LORA_STRENGTH_STAGE_2, tiling: TilingConfig | None = None,
    ):  # fmt: skip
        self.stage_1_ledger = replace(ledger, loras=[*ledger.loras, (distilled_lora, distilled_lora_strength_stage_1)])
        self.stage_2_ledger = replace(ledger, loras=[*ledger.loras, (distilled_lora, distilled_lora_strength_stage_2)])
        self.ledger = ledger
        self.tiling = tiling

    def __call__(
        self, prompt: str, negative_prompt: str, seed: int, height: int, width: int, num_frames: int,
        frame_rate: float, num_inference_steps: int, video_guider_params: MultiModalGuiderParams,
        audio_guider_params: MultiModalGuiderParams, images: list[ImageConditioningInput] = (),
        enhance_prompt: bool = False, noiser: Noiser | None = None, sde_noise: NoiseFn | None = None,
    ) -> GeneratedVideo:  # fmt: skip
        """`noiser` replaces the seed's initial noise and `sde_noise` the seed's res_2s noise
        (latent -> noise, drawn per step as substep video, substep audio, step video, step
        audio, through both stages)."""
        ledger = self.ledger
        half, full = half_and_full_shapes(height, width, num_frames, frame_rate)
        (video_context, audio_context, _), (negative_video, negative_audio, _) = ledger.encode_prompts(
            [prompt, negative_prompt], enhance_first_prompt=enhance_prompt,
            image=images[0].path if images else None, seed=seed,
        )  # fmt: skip
        contexts, noiser = (video_context, audio_context), noiser or GaussianNoiser(seed)
        sde = (sde_noise, sde_noise) if sde_noise is not None else seeded_sde_noise(seed)

        conditionings = encode_images(ledger, images, half)
        guiders = (
            create_multimodal_guider_factory(video_guider_params, negative_video),
            create_multimodal_guider_factory(audio_guider_params, negative_audio),
        )
        # The schedule shifts with the half-size latent's token count (only its shape is read).
        half_latent = mx.zeros(VideoLatentShape.from_pixel_shape(half))
        sigmas = LTX2Scheduler().execute(steps=num_inference_steps, latent=half_latent)
        transformer = self.stage_1_ledger.transformer()
        video_state, audio_state = denoise_stage_res2s(
            self.stage_1_ledger, transformer, half, contexts, sigmas, noiser, sde, conditionings, guiders
        )
        del transformer

        statistics = ledger.video_encoder().per_channel_statistics
        upscaled = upsample_latent(video_state.latent[:1], ledger.spatial_upscaler(), statistics)
        sigmas = mx.array(STAGE_2_DISTILLED_SIGMA_VALUES)
        transformer = self.stage_2_ledger.transformer()
        video_state, audio_state = denoise_stage_res2s(
            self.stage_2_ledger, transformer, full, contexts, sigmas, noiser, sde, encode_images(ledger, images, full),
            noise_scale=sigmas[0], initial_video_latent=upscaled, initial_audio_latent=audio_state.latent,
        )  # fmt: skip
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)

"""The one denoising loop every pipeline runs (ltx-pipelines `utils/helpers.py` and
`utils/samplers.py`).

A pipeline calls `denoise_audio_video` with a transformer (an X0 model: it returns denoised
latents), the prompt contexts, guiders, a stepper, sigmas, conditioning items and a noiser.
It builds the latent states (`states`), applies the conditioning, noises them, runs the
sampler (`samplers`: Euler; `res2s`: res_2s, picked by the stepper), each step one call of
a denoising function (`guidance`), and returns the unpatchified result. Pipelines configure
this function; none carries a loop of its own.
"""

from LTX_2_MLX.pipelines.denoising.core import denoise_audio_video, denoising_loop
from LTX_2_MLX.pipelines.denoising.guidance import (
    DenoisingFunc,
    X0Transformer,
    guider_denoising_func,
    make_denoising_func,
    modality_from_latent_state,
    multi_modal_guider_denoising_func,
    multi_modal_guider_factory_denoising_func,
    simple_denoising_func,
)
from LTX_2_MLX.pipelines.denoising.res2s import (
    NoiseFn,
    gaussian_sde_noise,
    get_res2s_coefficients,
    normalize_sde_noise,
    res2s_audio_video_denoising_loop,
)
from LTX_2_MLX.pipelines.denoising.samplers import StepCallback, euler_denoising_loop
from LTX_2_MLX.pipelines.denoising.states import (
    PipelineComponents,
    create_noised_state,
    noise_audio_state,
    noise_video_state,
    post_process_latent,
    timesteps_from_mask,
)

__all__ = [
    "DenoisingFunc",
    "NoiseFn",
    "PipelineComponents",
    "StepCallback",
    "X0Transformer",
    "create_noised_state",
    "denoise_audio_video",
    "denoising_loop",
    "euler_denoising_loop",
    "gaussian_sde_noise",
    "get_res2s_coefficients",
    "guider_denoising_func",
    "make_denoising_func",
    "modality_from_latent_state",
    "multi_modal_guider_denoising_func",
    "multi_modal_guider_factory_denoising_func",
    "noise_audio_state",
    "noise_video_state",
    "normalize_sde_noise",
    "post_process_latent",
    "res2s_audio_video_denoising_loop",
    "simple_denoising_func",
    "timesteps_from_mask",
]

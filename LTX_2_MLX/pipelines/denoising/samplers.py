"""The Euler sampler and the step counter both samplers report through
(ltx-pipelines `utils/samplers.py`)."""

from collections.abc import Callable, Iterator
from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.diffusion_steps import DiffusionStepProtocol
from LTX_2_MLX.components.types import LatentState
from LTX_2_MLX.pipelines.denoising.guidance import DenoisingFunc
from LTX_2_MLX.pipelines.denoising.states import post_process_latent
from LTX_2_MLX.progress import progress_bar

# Told (steps done, steps in all) after each step, e.g. to drive a progress bar of one's own.
StepCallback = Callable[[int, int], None]


def counted_steps(
    total: int, show_progress: bool, description: str, on_step: StepCallback | None = None
) -> Iterator[int]:
    """0..total-1, with a tqdm bar (when shown, and this process is not quiet) and `on_step`
    told after each step."""
    with progress_bar(total=total, desc=description, disable=not show_progress) as bar:
        for step_index in range(total):
            yield step_index
            bar.update(1)
            if on_step is not None:
                on_step(step_index + 1, total)


def euler_denoising_loop(
    sigmas: mx.array,
    video_state: LatentState,
    audio_state: LatentState,
    stepper: DiffusionStepProtocol,
    denoise_fn: DenoisingFunc,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
) -> tuple[LatentState, LatentState]:
    """For each sigma but the last: denoise, keep conditioned tokens clean, step."""
    for step_index in counted_steps(sigmas.shape[0] - 1, show_progress, "denoising", on_step):
        denoised_video, denoised_audio = denoise_fn(video_state, audio_state, sigmas, step_index)
        denoised_video = post_process_latent(denoised_video, video_state.denoise_mask, video_state.clean_latent)
        denoised_audio = post_process_latent(denoised_audio, audio_state.denoise_mask, audio_state.clean_latent)
        video_state = replace(video_state, latent=stepper.step(video_state.latent, denoised_video, sigmas, step_index))
        audio_state = replace(audio_state, latent=stepper.step(audio_state.latent, denoised_audio, sigmas, step_index))
        mx.eval(video_state.latent, audio_state.latent)
    return video_state, audio_state

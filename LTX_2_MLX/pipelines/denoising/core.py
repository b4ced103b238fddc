"""`denoise_audio_video`: states -> conditioning -> noise -> sampler -> unpatchified latents."""

from collections.abc import Sequence
from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.diffusion_steps import DiffusionStepProtocol, Res2sDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuider, MultiModalGuiderFactory
from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.types import LatentState, VideoPixelShape
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.pipelines.denoising.guidance import DenoisingFunc, X0Transformer, make_denoising_func
from LTX_2_MLX.pipelines.denoising.res2s import res2s_audio_video_denoising_loop
from LTX_2_MLX.pipelines.denoising.samplers import StepCallback, euler_denoising_loop
from LTX_2_MLX.pipelines.denoising.states import PipelineComponents, noise_audio_state, noise_video_state


def denoising_loop(
    sigmas: mx.array,
    video_state: LatentState,
    audio_state: LatentState,
    stepper: DiffusionStepProtocol,
    denoise_fn: DenoisingFunc,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
    **res2s_options,
) -> tuple[LatentState, LatentState]:
    """The sampler the stepper belongs to: res_2s for `Res2sDiffusionStep`, Euler otherwise."""
    if isinstance(stepper, Res2sDiffusionStep):
        return res2s_audio_video_denoising_loop(
            sigmas,
            video_state,
            audio_state,
            stepper,
            denoise_fn,
            show_progress=show_progress,
            on_step=on_step,
            **res2s_options,
        )
    if res2s_options:
        raise ValueError(f"{sorted(res2s_options)} only apply to the res_2s sampler (stepper=Res2sDiffusionStep())")
    return euler_denoising_loop(sigmas, video_state, audio_state, stepper, denoise_fn, show_progress, on_step)


def denoise_audio_video(
    output_shape: VideoPixelShape,
    transformer: X0Transformer,
    video_context: mx.array,
    audio_context: mx.array,
    sigmas: mx.array,
    stepper: DiffusionStepProtocol,
    noiser: Noiser,
    *,
    conditionings: Sequence[ConditioningItem] = (),
    audio_conditionings: Sequence[ConditioningItem] = (),
    video_guider: MultiModalGuider | MultiModalGuiderFactory | None = None,
    audio_guider: MultiModalGuider | MultiModalGuiderFactory | None = None,
    denoise_fn: DenoisingFunc | None = None,
    denoise_audio: bool = True,
    components: PipelineComponents | None = None,
    dtype: mx.Dtype = mx.float32,
    noise_scale: float | mx.array = 1.0,
    initial_video_latent: mx.array | None = None,
    initial_audio_latent: mx.array | None = None,
    show_progress: bool = True,
    on_step: StepCallback | None = None,
    **res2s_options,
) -> tuple[LatentState, LatentState]:
    """Generate (or refine) the video and audio latents of `output_shape`.

    transformer: an X0 model, `transformer(video=Modality, audio=Modality, perturbations=...)`
        -> (denoised_video, denoised_audio).
    sigmas: the schedule, from 1 (or noise_scale, when refining `initial_*_latent`) to 0.
    stepper: `EulerDiffusionStep()` or `Res2sDiffusionStep()` (the res_2s sampler; its noise
        options `noise_seed`, `step_noise_fn`, `substep_noise_fn`, `bongmath`... go in
        `res2s_options`).
    noiser: noises video then audio (`GaussianNoiser(seed)`, or `InjectedNoiser([...])`).
    conditionings / audio_conditionings: items applied to the video / audio state.
    video_guider / audio_guider: guidance per stream (None: unguided); or a custom
        `denoise_fn` instead of both (e.g. `guider_denoising_func(CFGGuider(...), ...)`).
    denoise_audio: False keeps audio fixed at `initial_audio_latent` (audio-to-video): it is
        not noised and its denoise mask is 0, so it only conditions the video.

    Returns the final (video_state, audio_state), conditioning tokens removed, latents back in
    (B, C, F, H, W) and (B, C, T, mel_bins).
    """
    components = components or PipelineComponents()
    if denoise_fn is not None and (video_guider is not None or audio_guider is not None):
        raise ValueError("pass either guiders or a denoise_fn, not both")
    if denoise_fn is None:
        denoise_fn = make_denoising_func(transformer, video_context, audio_context, video_guider, audio_guider)

    video_state, video_tools = noise_video_state(
        output_shape, noiser, conditionings, components, dtype, noise_scale, initial_video_latent
    )
    audio_state, audio_tools = noise_audio_state(
        output_shape,
        noiser,
        audio_conditionings,
        components,
        dtype,
        noise_scale if denoise_audio else 0.0,
        initial_audio_latent,
    )
    if not denoise_audio:
        audio_state = replace(audio_state, denoise_mask=mx.zeros_like(audio_state.denoise_mask))

    video_state, audio_state = denoising_loop(
        sigmas,
        video_state,
        audio_state,
        stepper,
        denoise_fn,
        show_progress=show_progress,
        on_step=on_step,
        **res2s_options,
    )

    video_state = video_tools.unpatchify(video_tools.clear_conditioning(video_state))
    audio_state = audio_tools.unpatchify(audio_tools.clear_conditioning(audio_state))
    return video_state, audio_state

"""The one denoising loop every pipeline runs (ltx-pipelines `utils/helpers.py` and
`utils/samplers.py`).

A pipeline calls `denoise_audio_video` with a transformer (an X0 model: it returns denoised
latents), the prompt contexts, guiders, a stepper, sigmas, conditioning items and a noiser.
It builds the latent states, applies the conditioning, noises them, runs the sampler (Euler or
res_2s, picked by the stepper) and returns the unpatchified result. Pipelines configure this
function; none carries a loop of its own.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import mlx.core as mx
import numpy as np
from tqdm import tqdm

from LTX_2_MLX.components.diffusion_steps import DiffusionStepProtocol, Res2sDiffusionStep
from LTX_2_MLX.components.guiders import (
    GuiderProtocol,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    create_multimodal_guider_factory,
)
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
from LTX_2_MLX.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from LTX_2_MLX.model.transformer.modality import Modality


class DenoisingFunc(Protocol):
    """(video_state, audio_state, sigmas, step_index) -> (denoised_video, denoised_audio)."""

    def __call__(
        self, video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]: ...


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


# ---------------------------------------------------------------------------------------------
# States: build, condition, noise
# ---------------------------------------------------------------------------------------------


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
    video_latent_shape = VideoLatentShape.from_pixel_shape(
        shape=output_shape,
        latent_channels=components.video_latent_channels,
        scale_factors=components.video_scale_factors,
    )
    video_tools = VideoLatentTools(
        components.video_patchifier, video_latent_shape, output_shape.fps, scale_factors=components.video_scale_factors
    )
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
    patchifier = components.audio_patchifier
    audio_latent_shape = AudioLatentShape.from_video_pixel_shape(
        output_shape,
        channels=components.audio_latent_channels,
        mel_bins=components.audio_mel_bins,
        sample_rate=patchifier.sample_rate,
        hop_length=patchifier.hop_length,
        audio_latent_downsample_factor=patchifier.audio_latent_downsample_factor,
    )
    audio_tools = AudioLatentTools(patchifier, audio_latent_shape)
    state = create_noised_state(audio_tools, conditionings, noiser, dtype, noise_scale, initial_latent)
    return state, audio_tools


# ---------------------------------------------------------------------------------------------
# Denoising functions: one transformer evaluation (with guidance) per call
# ---------------------------------------------------------------------------------------------


def post_process_latent(denoised: mx.array, denoise_mask: mx.array, clean: mx.array) -> mx.array:
    """Keep the clean latent where the mask is 0 (conditioning), the prediction where it is 1."""
    blended = denoised * denoise_mask + clean.astype(mx.float32) * (1 - denoise_mask)
    return blended.astype(denoised.dtype)


def timesteps_from_mask(denoise_mask: mx.array, sigma: float | mx.array) -> mx.array:
    """Per-token noise level: sigma where a token is denoised, 0 where it is kept clean."""
    return denoise_mask * sigma


def modality_from_latent_state(
    state: LatentState, context: mx.array, sigma: mx.array, enabled: bool = True
) -> Modality:
    batch_size = state.latent.shape[0]
    sigma = mx.array(sigma, dtype=mx.float32)
    return Modality(
        latent=state.latent,
        sigma=mx.broadcast_to(sigma.reshape(-1), (batch_size,)),
        timesteps=timesteps_from_mask(state.denoise_mask, sigma),
        positions=state.positions,
        context=context,
        enabled=enabled,
        context_mask=None,
        attention_mask=state.attention_mask,
    )


def _batched(config: PerturbationConfig, batch_size: int) -> BatchedPerturbationConfig:
    return BatchedPerturbationConfig(perturbations=[config] * batch_size)


def simple_denoising_func(video_context: mx.array, audio_context: mx.array, transformer) -> DenoisingFunc:
    """No guidance: one transformer call per step."""

    def simple_denoising_step(
        video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]:
        sigma = sigmas[step_index]
        video = modality_from_latent_state(video_state, video_context, sigma)
        audio = modality_from_latent_state(audio_state, audio_context, sigma)
        return transformer(video=video, audio=audio, perturbations=None)

    return simple_denoising_step


def guider_denoising_func(
    guider: GuiderProtocol,
    v_context_p: mx.array,
    v_context_n: mx.array,
    a_context_p: mx.array,
    a_context_n: mx.array,
    transformer,
) -> DenoisingFunc:
    """One delta guider (CFG, CFG*, APG) applied to both streams from positive / negative
    prompt predictions."""

    def guider_denoising_step(
        video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]:
        sigma = sigmas[step_index]
        video = modality_from_latent_state(video_state, v_context_p, sigma)
        audio = modality_from_latent_state(audio_state, a_context_p, sigma)
        denoised_video, denoised_audio = transformer(video=video, audio=audio, perturbations=None)
        if guider.enabled():
            neg_video = modality_from_latent_state(video_state, v_context_n, sigma)
            neg_audio = modality_from_latent_state(audio_state, a_context_n, sigma)
            neg_denoised_video, neg_denoised_audio = transformer(video=neg_video, audio=neg_audio, perturbations=None)
            denoised_video = denoised_video + guider.delta(denoised_video, neg_denoised_video)
            denoised_audio = denoised_audio + guider.delta(denoised_audio, neg_denoised_audio)
        return denoised_video, denoised_audio

    return guider_denoising_step


def multi_modal_guider_denoising_func(
    video_guider: MultiModalGuider,
    audio_guider: MultiModalGuider,
    v_context: mx.array,
    a_context: mx.array,
    transformer,
    *,
    last_denoised_video: mx.array | None = None,
    last_denoised_audio: mx.array | None = None,
) -> DenoisingFunc:
    """Up to four transformer calls per step, each only when a guider needs it: the positive
    prompt; the negative prompt (CFG); self-attention skipped in the STG blocks (STG); audio<->
    video cross-attention skipped (modality guidance). A stream whose guider skips this step
    reuses its last prediction."""

    def guider_denoising_step(
        video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]:
        nonlocal last_denoised_video, last_denoised_audio

        skip_video = video_guider.should_skip_step(step_index)
        skip_audio = audio_guider.should_skip_step(step_index)
        if skip_video and skip_audio:
            return last_denoised_video, last_denoised_audio

        sigma = sigmas[step_index]
        batch_size = video_state.latent.shape[0]
        pos_video = modality_from_latent_state(video_state, v_context, sigma, enabled=not skip_video)
        pos_audio = modality_from_latent_state(audio_state, a_context, sigma, enabled=not skip_audio)
        denoised_video, denoised_audio = transformer(video=pos_video, audio=pos_audio, perturbations=None)

        neg_denoised_video, neg_denoised_audio = 0.0, 0.0
        if video_guider.do_unconditional_generation() or audio_guider.do_unconditional_generation():
            for name, guider in (("video", video_guider), ("audio", audio_guider)):
                if guider.do_unconditional_generation() and guider.negative_context is None:
                    raise ValueError(
                        f"the {name} guider has cfg_scale={guider.params.cfg_scale} but no negative_context: "
                        "pass the encoded negative prompt, or set cfg_scale=1.0"
                    )
            v_negative = video_guider.negative_context if video_guider.negative_context is not None else v_context
            a_negative = audio_guider.negative_context if audio_guider.negative_context is not None else a_context
            neg_denoised_video, neg_denoised_audio = transformer(
                video=modality_from_latent_state(video_state, v_negative, sigma),
                audio=modality_from_latent_state(audio_state, a_negative, sigma),
                perturbations=None,
            )

        ptb_denoised_video, ptb_denoised_audio = 0.0, 0.0
        if video_guider.do_perturbed_generation() or audio_guider.do_perturbed_generation():
            perturbations = []
            if video_guider.do_perturbed_generation():
                perturbations.append(
                    Perturbation(type=PerturbationType.SKIP_VIDEO_SELF_ATTN, blocks=video_guider.params.stg_blocks)
                )
            if audio_guider.do_perturbed_generation():
                perturbations.append(
                    Perturbation(type=PerturbationType.SKIP_AUDIO_SELF_ATTN, blocks=audio_guider.params.stg_blocks)
                )
            ptb_denoised_video, ptb_denoised_audio = transformer(
                video=pos_video,
                audio=pos_audio,
                perturbations=_batched(PerturbationConfig(perturbations=perturbations), batch_size),
            )

        mod_denoised_video, mod_denoised_audio = 0.0, 0.0
        if video_guider.do_isolated_modality_generation() or audio_guider.do_isolated_modality_generation():
            perturbations = [
                Perturbation(type=PerturbationType.SKIP_A2V_CROSS_ATTN, blocks=None),
                Perturbation(type=PerturbationType.SKIP_V2A_CROSS_ATTN, blocks=None),
            ]
            mod_denoised_video, mod_denoised_audio = transformer(
                video=pos_video,
                audio=pos_audio,
                perturbations=_batched(PerturbationConfig(perturbations=perturbations), batch_size),
            )

        if skip_video:
            denoised_video = last_denoised_video
        else:
            denoised_video = video_guider.calculate(
                denoised_video, neg_denoised_video, ptb_denoised_video, mod_denoised_video
            )
        if skip_audio:
            denoised_audio = last_denoised_audio
        else:
            denoised_audio = audio_guider.calculate(
                denoised_audio, neg_denoised_audio, ptb_denoised_audio, mod_denoised_audio
            )

        last_denoised_video, last_denoised_audio = denoised_video, denoised_audio
        return denoised_video, denoised_audio

    return guider_denoising_step


def multi_modal_guider_factory_denoising_func(
    video_guider_factory: MultiModalGuiderFactory,
    audio_guider_factory: MultiModalGuiderFactory | None,
    v_context: mx.array,
    a_context: mx.array,
    transformer,
) -> DenoisingFunc:
    """`multi_modal_guider_denoising_func` with the guiders' params picked per step by sigma
    (the audio factory defaults to the video one)."""
    last_denoised_video: mx.array | None = None
    last_denoised_audio: mx.array | None = None
    sigma_values: list[float] | None = None

    def guider_denoising_step(
        video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]:
        nonlocal last_denoised_video, last_denoised_audio, sigma_values
        if sigma_values is None:
            sigma_values = np.array(sigmas, dtype=np.float32).tolist()
        sigma_value = sigma_values[step_index]
        denoise_fn = multi_modal_guider_denoising_func(
            video_guider_factory.build_from_sigma(sigma_value),
            (audio_guider_factory or video_guider_factory).build_from_sigma(sigma_value),
            v_context,
            a_context,
            transformer,
            last_denoised_video=last_denoised_video,
            last_denoised_audio=last_denoised_audio,
        )
        last_denoised_video, last_denoised_audio = denoise_fn(video_state, audio_state, sigmas, step_index)
        return last_denoised_video, last_denoised_audio

    return guider_denoising_step


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------


def _progress(iterable, show_progress: bool, description: str):
    return tqdm(iterable, desc=description, disable=not show_progress)


def euler_denoising_loop(
    sigmas: mx.array,
    video_state: LatentState,
    audio_state: LatentState,
    stepper: DiffusionStepProtocol,
    denoise_fn: DenoisingFunc,
    show_progress: bool = True,
) -> tuple[LatentState, LatentState]:
    """For each sigma but the last: denoise, keep conditioned tokens clean, step."""
    for step_index in _progress(range(sigmas.shape[0] - 1), show_progress, "denoising"):
        denoised_video, denoised_audio = denoise_fn(video_state, audio_state, sigmas, step_index)
        denoised_video = post_process_latent(denoised_video, video_state.denoise_mask, video_state.clean_latent)
        denoised_audio = post_process_latent(denoised_audio, audio_state.denoise_mask, audio_state.clean_latent)
        video_state = replace(video_state, latent=stepper.step(video_state.latent, denoised_video, sigmas, step_index))
        audio_state = replace(audio_state, latent=stepper.step(audio_state.latent, denoised_audio, sigmas, step_index))
        mx.eval(video_state.latent, audio_state.latent)
    return video_state, audio_state


NoiseFn = Callable[[mx.array], mx.array]


def normalize_sde_noise(noise: mx.array) -> mx.array:
    """Standardise noise over the whole array, then per batch row over (tokens, features)
    (unbiased std, as the reference)."""
    noise = noise.astype(mx.float32)
    noise = (noise - mx.mean(noise)) / mx.std(noise, ddof=1)
    noise = noise - mx.mean(noise, axis=(-2, -1), keepdims=True)
    return noise / mx.std(noise, axis=(-2, -1), keepdims=True, ddof=1)


def gaussian_sde_noise(key: int | mx.array) -> NoiseFn:
    """A noise source for res_2s: normalised standard-normal noise like the latent, from the
    next split of `key` on each call."""
    key = mx.random.key(key) if isinstance(key, int) else key

    def new_noise(latent: mx.array) -> mx.array:
        nonlocal key
        key, subkey = mx.random.split(key)
        return normalize_sde_noise(mx.random.normal(latent.shape, key=subkey))

    return new_noise


def _phi(j: int, neg_h: float) -> float:
    """φ_j(z) = (e^z - Σ_{k<j} z^k/k!) / z^j, the exponential-integrator weights (1/j! at 0)."""
    if abs(neg_h) < 1e-10:
        return 1.0 / math.factorial(j)
    remainder = sum(neg_h**k / math.factorial(k) for k in range(j))
    return (math.exp(neg_h) - remainder) / (neg_h**j)


def get_res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """Runge-Kutta weights of res_2s for a log-sigma step h: a21 (to the substep at c2), and
    b1, b2 (combining the two evaluations)."""
    a21 = c2 * _phi(1, -h * c2)
    b2 = _phi(2, -h) / c2
    b1 = _phi(1, -h) - b2
    return a21, b1, b2


def _inject_sde_noise(
    state: LatentState,
    sample: mx.array,
    denoised_sample: mx.array,
    noise_fn: NoiseFn,
    stepper: Res2sDiffusionStep,
    sigma_pair: np.ndarray,
    legacy_mode: bool,
) -> mx.array:
    """Res2s step from sigma_pair[0] to sigma_pair[1] with fresh noise. Legacy mode uses the
    scalar sigmas and re-applies the conditioning blend after; otherwise every token steps
    between its own sigmas (sigma times its denoise mask)."""
    new_noise = noise_fn(state.latent)
    if legacy_mode:
        x_next = stepper.step(
            sample=sample, denoised_sample=denoised_sample, sigmas=sigma_pair, step_index=0, noise=new_noise
        )
        return post_process_latent(x_next, state.denoise_mask, state.clean_latent)
    token_sigmas = mx.stack(
        [
            timesteps_from_mask(state.denoise_mask, float(sigma_pair[0])),
            timesteps_from_mask(state.denoise_mask, float(sigma_pair[1])),
        ]
    )
    return stepper.step(
        sample=sample, denoised_sample=denoised_sample, sigmas=token_sigmas, step_index=0, noise=new_noise
    )


def res2s_audio_video_denoising_loop(
    sigmas: mx.array,
    video_state: LatentState,
    audio_state: LatentState,
    stepper: Res2sDiffusionStep,
    denoise_fn: DenoisingFunc,
    noise_seed: int = 0,
    step_noise_fn: NoiseFn | None = None,
    substep_noise_fn: NoiseFn | None = None,
    bongmath: bool = True,
    bongmath_max_iter: int = 100,
    legacy_mode: bool = True,
    show_progress: bool = True,
) -> tuple[LatentState, LatentState]:
    """res_2s: a two-stage exponential Runge-Kutta step per sigma, evaluating the denoiser at
    the current point and at a noised midpoint (sigma·sigma_next)^½, with SDE noise injected
    at the substep and at the step.

    The noise comes from `substep_noise_fn` / `step_noise_fn` (latent -> noise), called per
    step in the order substep video, substep audio, step video, step audio; by default
    `gaussian_sde_noise(noise_seed)` and `gaussian_sde_noise(noise_seed + 10000)`.
    Scalar coefficients are computed on the host in float64; array math runs in float32
    (the reference uses float64, which Metal lacks) and states are cast back to the latent dtype.
    """
    if not isinstance(stepper, Res2sDiffusionStep):
        raise ValueError(f"res_2s needs a Res2sDiffusionStep as stepper, got {type(stepper).__name__}")
    step_noise_fn = step_noise_fn or gaussian_sde_noise(noise_seed)
    substep_noise_fn = substep_noise_fn or gaussian_sde_noise(noise_seed + 10000)
    video_dtype, audio_dtype = video_state.latent.dtype, audio_state.latent.dtype
    f32 = mx.float32

    sigma_values = np.array(sigmas, dtype=np.float32)
    n_full_steps = len(sigma_values) - 1
    if sigma_values[-1] == 0:
        # A last step to a tiny sigma keeps the log-space step finite; the true 0 is reached
        # by a final plain denoise below.
        sigma_values = np.concatenate([sigma_values[:-1], np.array([0.0011, 0.0], dtype=np.float32)])
    sigma_values = sigma_values.astype(np.float64)
    with np.errstate(divide="ignore"):
        hs = -np.log(sigma_values[1:] / sigma_values[:-1])
    c2 = 0.5

    for step_index in _progress(range(n_full_steps), show_progress, "denoising (res_2s)"):
        sigma, sigma_next = sigma_values[step_index], sigma_values[step_index + 1]
        h = float(hs[step_index])
        a21, b1, b2 = get_res2s_coefficients(h, c2)
        sub_sigma = np.sqrt(sigma * sigma_next)  # the c2 = 0.5 midpoint in log space

        # Stage 1: evaluate at the current point.
        x_anchor_video = video_state.latent.astype(f32)
        x_anchor_audio = audio_state.latent.astype(f32)
        denoised_video_1, denoised_audio_1 = denoise_fn(video_state, audio_state, sigmas, step_index)
        denoised_video_1 = post_process_latent(denoised_video_1, video_state.denoise_mask, video_state.clean_latent)
        denoised_audio_1 = post_process_latent(denoised_audio_1, audio_state.denoise_mask, audio_state.clean_latent)
        eps_1_video = denoised_video_1.astype(f32) - x_anchor_video
        eps_1_audio = denoised_audio_1.astype(f32) - x_anchor_audio

        # Move to the substep, then add its noise.
        x_mid_video = x_anchor_video + h * a21 * eps_1_video
        x_mid_audio = x_anchor_audio + h * a21 * eps_1_audio
        substep_sigmas = np.array([sigma, sub_sigma])
        x_mid_video = _inject_sde_noise(
            video_state, x_anchor_video, x_mid_video, substep_noise_fn, stepper, substep_sigmas, legacy_mode
        )
        x_mid_audio = _inject_sde_noise(
            audio_state, x_anchor_audio, x_mid_audio, substep_noise_fn, stepper, substep_sigmas, legacy_mode
        )

        # Bong iteration: move the anchor so that anchor + h·a21·eps_1 lands on the noised
        # midpoint (a fixed-point iteration, contracting since h·a21 < 1 here).
        if bongmath and h < 0.5 and sigma > 0.03:
            for _ in range(bongmath_max_iter):
                x_anchor_video = x_mid_video - h * a21 * eps_1_video
                eps_1_video = denoised_video_1.astype(f32) - x_anchor_video
                x_anchor_audio = x_mid_audio - h * a21 * eps_1_audio
                eps_1_audio = denoised_audio_1.astype(f32) - x_anchor_audio

        # Stage 2: evaluate at the noised midpoint.
        mid_video_state = replace(video_state, latent=x_mid_video.astype(video_dtype))
        mid_audio_state = replace(audio_state, latent=x_mid_audio.astype(audio_dtype))
        denoised_video_2, denoised_audio_2 = denoise_fn(
            mid_video_state, mid_audio_state, mx.array([sub_sigma], dtype=f32), 0
        )
        denoised_video_2 = post_process_latent(denoised_video_2, video_state.denoise_mask, video_state.clean_latent)
        denoised_audio_2 = post_process_latent(denoised_audio_2, audio_state.denoise_mask, audio_state.clean_latent)
        eps_2_video = denoised_video_2.astype(f32) - x_anchor_video
        eps_2_audio = denoised_audio_2.astype(f32) - x_anchor_audio

        # Combine both evaluations, then add the step's noise.
        x_next_video = x_anchor_video + h * (b1 * eps_1_video + b2 * eps_2_video)
        x_next_audio = x_anchor_audio + h * (b1 * eps_1_audio + b2 * eps_2_audio)
        step_sigmas = np.array([sigma, sigma_next])
        x_next_video = _inject_sde_noise(
            video_state, x_anchor_video, x_next_video, step_noise_fn, stepper, step_sigmas, legacy_mode
        )
        x_next_audio = _inject_sde_noise(
            audio_state, x_anchor_audio, x_next_audio, step_noise_fn, stepper, step_sigmas, legacy_mode
        )

        video_state = replace(video_state, latent=x_next_video.astype(video_dtype))
        audio_state = replace(audio_state, latent=x_next_audio.astype(audio_dtype))
        mx.eval(video_state.latent, audio_state.latent)

    if sigma_values[-1] == 0:
        final_sigmas = mx.array(sigma_values.astype(np.float32))
        denoised_video, denoised_audio = denoise_fn(video_state, audio_state, final_sigmas, n_full_steps)
        denoised_video = post_process_latent(denoised_video, video_state.denoise_mask, video_state.clean_latent)
        denoised_audio = post_process_latent(denoised_audio, audio_state.denoise_mask, audio_state.clean_latent)
        video_state = replace(video_state, latent=denoised_video.astype(video_dtype))
        audio_state = replace(audio_state, latent=denoised_audio.astype(audio_dtype))
        mx.eval(video_state.latent, audio_state.latent)

    return video_state, audio_state


def denoising_loop(
    sigmas: mx.array,
    video_state: LatentState,
    audio_state: LatentState,
    stepper: DiffusionStepProtocol,
    denoise_fn: DenoisingFunc,
    show_progress: bool = True,
    **res2s_options,
) -> tuple[LatentState, LatentState]:
    """The sampler the stepper belongs to: res_2s for `Res2sDiffusionStep`, Euler otherwise."""
    if isinstance(stepper, Res2sDiffusionStep):
        return res2s_audio_video_denoising_loop(
            sigmas, video_state, audio_state, stepper, denoise_fn, show_progress=show_progress, **res2s_options
        )
    if res2s_options:
        raise ValueError(f"{sorted(res2s_options)} only apply to the res_2s sampler (stepper=Res2sDiffusionStep())")
    return euler_denoising_loop(sigmas, video_state, audio_state, stepper, denoise_fn, show_progress)


def make_denoising_func(
    transformer,
    video_context: mx.array,
    audio_context: mx.array,
    video_guider: MultiModalGuider | MultiModalGuiderFactory | None = None,
    audio_guider: MultiModalGuider | MultiModalGuiderFactory | None = None,
) -> DenoisingFunc:
    """Plain denoising when neither stream is guided; otherwise multi-modal guidance, a
    stream without a guider getting neutral params (no guidance)."""
    if video_guider is None and audio_guider is None:
        return simple_denoising_func(video_context, audio_context, transformer)

    def as_factory(guider) -> MultiModalGuiderFactory:
        if guider is None:
            return MultiModalGuiderFactory.constant(MultiModalGuiderParams())
        if isinstance(guider, MultiModalGuider):
            return create_multimodal_guider_factory(guider.params, guider.negative_context)
        if isinstance(guider, MultiModalGuiderFactory):
            return guider
        raise TypeError(
            f"guiders are MultiModalGuider or MultiModalGuiderFactory, got {type(guider).__name__}; "
            "wrap params as MultiModalGuider(params, negative_context)"
        )

    return multi_modal_guider_factory_denoising_func(
        as_factory(video_guider), as_factory(audio_guider), video_context, audio_context, transformer
    )


def denoise_audio_video(
    output_shape: VideoPixelShape,
    transformer,
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
        sigmas, video_state, audio_state, stepper, denoise_fn, show_progress=show_progress, **res2s_options
    )

    video_state = video_tools.unpatchify(video_tools.clear_conditioning(video_state))
    audio_state = audio_tools.unpatchify(audio_tools.clear_conditioning(audio_state))
    return video_state, audio_state

"""The res_2s sampler: second-order exponential Runge-Kutta steps with SDE noise
(ltx-pipelines `utils/res2s.py` and `utils/samplers.py`)."""

import math
from collections.abc import Callable
from dataclasses import replace

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.diffusion_steps import Res2sDiffusionStep
from LTX_2_MLX.components.types import LatentState
from LTX_2_MLX.pipelines.denoising.guidance import DenoisingFunc
from LTX_2_MLX.pipelines.denoising.samplers import StepCallback, counted_steps
from LTX_2_MLX.pipelines.denoising.states import post_process_latent, timesteps_from_mask

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
    on_step: StepCallback | None = None,
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

    for step_index in counted_steps(n_full_steps, show_progress, "denoising (res_2s)", on_step):
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

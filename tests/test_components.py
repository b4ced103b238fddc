"""Schedulers, diffusion steps, guiders, noisers, patchifiers and latent tools against ltx-core,
on random arrays (float32, CPU)."""

import math

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core import tools as ref_tools
from ltx_core import types as ref_types
from ltx_core.components import diffusion_steps as ref_steps
from ltx_core.components import guiders as ref_guiders
from ltx_core.components import noisers as ref_noisers
from ltx_core.components import patchifiers as ref_patchifiers
from ltx_core.components import schedulers as ref_schedulers
from reference import PARITY_FIGURES, assert_matches, to_mx, to_numpy

from LTX_2_MLX.components import (
    AudioLatentShape,
    AudioLatentTools,
    AudioPatchifier,
    BetaScheduler,
    CFGGuider,
    CFGStarRescalingGuider,
    EulerDiffusionStep,
    GaussianNoiser,
    InjectedNoiser,
    LatentState,
    LegacyStatefulAPGGuider,
    LinearQuadraticScheduler,
    LTX2Scheduler,
    LtxAPGGuider,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    Res2sDiffusionStep,
    STGGuider,
    VideoLatentPatchifier,
    VideoLatentShape,
    VideoLatentTools,
    get_pixel_coords,
)

TOL = 1e-6


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def assert_states_match(name, state: LatentState, ref_state):
    for field in ("latent", "denoise_mask", "positions", "clean_latent"):
        assert_matches(f"{name}.{field}", getattr(state, field), getattr(ref_state, field), TOL)
    if ref_state.attention_mask is None:
        assert state.attention_mask is None, f"{name}: attention_mask should be None"
    else:
        assert_matches(f"{name}.attention_mask", state.attention_mask, ref_state.attention_mask, TOL)


# --- schedulers --------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 15, 20, 30, 40, 50])
def test_ltx2_scheduler_matches_reference(steps):
    worst = 0.0
    for latent_shape in [None, (1, 128, 2, 4, 6), (1, 128, 16, 16, 24), (1, 128, 16, 34, 60), (2, 128, 31, 48, 64)]:
        ref_latent = torch.empty(latent_shape) if latent_shape else None
        latent = mx.zeros(latent_shape) if latent_shape else None
        for options in [{}, {"stretch": False}, {"terminal": 0.2, "max_shift": 1.8, "base_shift": 0.5}]:
            ref = ref_schedulers.LTX2Scheduler().execute(steps, latent=ref_latent, **options)
            if torch.isnan(ref).any():  # the reference's degenerate steps=1 stretch; we refuse it
                with pytest.raises(ValueError, match="stretch=False"):
                    LTX2Scheduler().execute(steps, latent=latent, **options)
                continue
            sigmas = LTX2Scheduler().execute(steps, latent=latent, **options)
            assert sigmas.dtype == mx.float32
            error = float(np.abs(to_numpy(sigmas) - ref.numpy()).max())
            assert error <= 1e-7, f"steps={steps} latent={latent_shape} {options}: max|Δ|={error:.3e}"
            worst = max(worst, error)
    PARITY_FIGURES.append((f"LTX2Scheduler steps={steps} (worst of 15 latents/options)", "max|Δ| (abs)", worst))


@pytest.mark.parametrize("steps", [1, 2, 5, 8, 30])
def test_linear_quadratic_scheduler_matches_reference(steps):
    for options in [{}, {"threshold_noise": 0.05, "linear_steps": max(1, steps // 3)}]:
        ref = ref_schedulers.LinearQuadraticScheduler().execute(steps, **options)
        sigmas = LinearQuadraticScheduler().execute(steps, **options)
        assert np.abs(to_numpy(sigmas) - ref.numpy()).max() <= 1e-7
    assert_matches(f"LinearQuadraticScheduler steps={steps}", sigmas, ref, 1e-7)


@pytest.mark.parametrize("steps", [1, 8, 40])
def test_beta_scheduler_matches_reference(steps):
    for alpha, beta in [(0.6, 0.6), (0.5, 0.8)]:
        ref = ref_schedulers.BetaScheduler().execute(steps, alpha, beta)
        sigmas = BetaScheduler().execute(steps, alpha, beta)
        assert sigmas.shape == tuple(ref.shape) and np.abs(to_numpy(sigmas) - ref.numpy()).max() <= 1e-7
    assert_matches(f"BetaScheduler steps={steps}", sigmas, ref, 1e-7)


def test_scheduler_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps=0"):
        LTX2Scheduler().execute(0)


# --- diffusion steps ---------------------------------------------------------------------------


def test_euler_step_matches_reference():
    sigmas = ref_schedulers.LTX2Scheduler().execute(8)
    sample, denoised = randn(2, 60, 16, seed=1), randn(2, 60, 16, seed=2)
    for step_index in range(len(sigmas) - 1):
        ref = ref_steps.EulerDiffusionStep().step(sample, denoised, sigmas, step_index)
        out = EulerDiffusionStep().step(to_mx(sample), to_mx(denoised), to_mx(sigmas), step_index)
        assert_matches(f"EulerDiffusionStep step {step_index}", out, ref, TOL)


def test_res2s_sde_coefficients_match_reference():
    sigma_next = torch.tensor([0.9, 0.5, 0.1, 0.0011, 0.0], dtype=torch.float64)
    cases = [
        {"sigma_up": sigma_next * 0.5},
        {"sigma_up": sigma_next * 1.5},  # clamped to sigma_next
        {"sigma_down": sigma_next * 0.7},
        {},
    ]
    for kwargs in cases:
        ref = ref_steps.Res2sDiffusionStep.get_sde_coeff(
            sigma_next.clone(), **{k: v.clone() for k, v in kwargs.items()}
        )
        host = Res2sDiffusionStep.get_sde_coeff(sigma_next.numpy(), **{k: v.numpy() for k, v in kwargs.items()})
        for name, r, h in zip(("alpha_ratio", "sigma_down", "sigma_up"), ref, host):
            assert np.allclose(h, r.numpy(), rtol=1e-12, atol=1e-12), f"{kwargs}: host {name}"
        # float32 arrays (per-token sigmas) against the reference run in float32 too: the
        # clamped case subtracts nearly equal squares, so float64 would differ by ~1e-4.
        ref32 = ref_steps.Res2sDiffusionStep.get_sde_coeff(
            sigma_next.float(), **{k: v.float() for k, v in kwargs.items()}
        )
        device = Res2sDiffusionStep.get_sde_coeff(to_mx(sigma_next), **{k: to_mx(v) for k, v in kwargs.items()})
        for name, r, d in zip(("alpha_ratio", "sigma_down", "sigma_up"), ref32, device):
            assert_matches(f"Res2s get_sde_coeff {sorted(kwargs)} {name}", d, r, TOL)


def test_res2s_step_matches_reference():
    sample, denoised, noise = randn(1, 40, 8, seed=3), randn(1, 40, 8, seed=4), randn(1, 40, 8, seed=5)
    stepper, ref_stepper = Res2sDiffusionStep(), ref_steps.Res2sDiffusionStep()
    # Scalar sigmas as the sampler passes them (float64 on the host).
    for pair in ([1.0, 0.9], [0.7, 0.35], [0.05, 0.0011], [0.3, 0.0]):
        ref_sigmas = torch.tensor(pair, dtype=torch.float64)
        ref = ref_stepper.step(sample.double(), denoised.double(), ref_sigmas, 0, noise.double())
        out = stepper.step(to_mx(sample), to_mx(denoised), np.array(pair), 0, to_mx(noise))
        assert_matches(f"Res2sDiffusionStep {pair}", out, ref, TOL)
    # Per-token sigmas (sigma times a denoise mask), as mx arrays.
    mask = torch.rand(1, 40, 1, generator=torch.Generator().manual_seed(6)) * 0.5 + 0.5
    ref_sigmas = torch.stack([mask * 0.8, mask * 0.6])
    ref = ref_stepper.step(sample, denoised, ref_sigmas, 0, noise)
    out = stepper.step(to_mx(sample), to_mx(denoised), to_mx(ref_sigmas), 0, to_mx(noise))
    assert_matches("Res2sDiffusionStep per-token sigmas", out, ref, TOL)


# --- guiders -----------------------------------------------------------------------------------


def test_delta_guiders_match_reference():
    # Batch 1: the reference's projection broadcasts per row only for one row.
    cond, uncond = randn(1, 3, 50, 16, seed=7), randn(1, 3, 50, 16, seed=8)
    cases = [
        ("CFGGuider", CFGGuider(3.5), ref_guiders.CFGGuider(3.5)),
        ("CFGStarRescalingGuider", CFGStarRescalingGuider(4.0), ref_guiders.CFGStarRescalingGuider(4.0)),
        ("STGGuider", STGGuider(1.3), ref_guiders.STGGuider(1.3)),
        ("LtxAPGGuider", LtxAPGGuider(5.0, eta=0.6), ref_guiders.LtxAPGGuider(5.0, eta=0.6)),
        (
            "LtxAPGGuider norm_threshold",
            LtxAPGGuider(5.0, eta=0.6, norm_threshold=20.0),
            ref_guiders.LtxAPGGuider(5.0, eta=0.6, norm_threshold=20.0),
        ),
    ]
    for name, guider, ref_guider in cases:
        assert guider.enabled() == ref_guider.enabled()
        assert_matches(name, guider.delta(to_mx(cond), to_mx(uncond)), ref_guider.delta(cond, uncond), TOL)
    assert not CFGGuider(1.0).enabled() and not STGGuider(0.0).enabled()
    # Each batch row is projected on its own: row 1 of a batch equals a batch of row 1 alone.
    batch_cond, batch_uncond = to_mx(randn(2, 3, 50, 16, seed=9)), to_mx(randn(2, 3, 50, 16, seed=10))
    guider = CFGStarRescalingGuider(4.0)
    assert_matches(
        "CFGStarRescalingGuider per batch row",
        guider.delta(batch_cond, batch_uncond)[1:],
        guider.delta(batch_cond[1:], batch_uncond[1:]),
        TOL,
    )


def test_stateful_apg_guider_matches_reference_over_steps():
    guider = LegacyStatefulAPGGuider(4.0, eta=0.5, norm_threshold=10.0, momentum=-0.5)
    ref_guider = ref_guiders.LegacyStatefulAPGGuider(4.0, eta=0.5, norm_threshold=10.0, momentum=-0.5)
    for step in range(3):
        cond, uncond = randn(1, 2, 40, 8, seed=10 + step), randn(1, 2, 40, 8, seed=20 + step)
        out, ref = guider.delta(to_mx(cond), to_mx(uncond)), ref_guider.delta(cond, uncond)
        assert_matches(f"LegacyStatefulAPGGuider step {step}", out, ref, TOL)


@pytest.mark.parametrize(
    "params",
    [
        MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1]),
        MultiModalGuiderParams(cfg_scale=7.0, stg_scale=0.0, rescale_scale=0.0, modality_scale=1.0),
        MultiModalGuiderParams(cfg_scale=1.0, stg_scale=2.0, rescale_scale=1.0, modality_scale=2.0),
    ],
)
def test_multimodal_guider_matches_reference(params):
    cond, uncond, perturbed, isolated = (randn(1, 60, 16, seed=s) for s in (30, 31, 32, 33))
    ref_params = ref_guiders.MultiModalGuiderParams(**vars(params))
    guider, ref_guider = MultiModalGuider(params), ref_guiders.MultiModalGuider(ref_params)
    # Predictions a step does not run are passed as 0.0, as the denoising functions do.
    run_uncond, run_isolated = params.cfg_scale != 1.0, params.modality_scale != 1.0
    out = guider.calculate(
        to_mx(cond), to_mx(uncond) if run_uncond else 0.0, to_mx(perturbed), to_mx(isolated) if run_isolated else 0.0
    )
    ref = ref_guider.calculate(cond, uncond if run_uncond else 0.0, perturbed, isolated if run_isolated else 0.0)
    assert_matches(f"MultiModalGuider cfg={params.cfg_scale} rescale={params.rescale_scale}", out, ref, TOL)
    for method in ("do_unconditional_generation", "do_perturbed_generation", "do_isolated_modality_generation"):
        assert getattr(guider, method)() == getattr(ref_guider, method)()


def test_multimodal_guider_skip_steps_and_factory_match_reference():
    for skip_step in (0, 1, 3):
        guider = MultiModalGuider(MultiModalGuiderParams(skip_step=skip_step))
        ref_guider = ref_guiders.MultiModalGuider(ref_guiders.MultiModalGuiderParams(skip_step=skip_step))
        assert [guider.should_skip_step(i) for i in range(12)] == [ref_guider.should_skip_step(i) for i in range(12)]

    by_sigma = {1.0: dict(cfg_scale=3.0), 0.6: dict(cfg_scale=2.0, stg_scale=1.0), 0.2: dict(cfg_scale=1.0)}
    factory = MultiModalGuiderFactory.from_dict({k: MultiModalGuiderParams(**v) for k, v in by_sigma.items()})
    ref_factory = ref_guiders.MultiModalGuiderFactory.from_dict(
        {k: ref_guiders.MultiModalGuiderParams(**v) for k, v in by_sigma.items()}
    )
    for sigma in (1.5, 1.0, 0.99, 0.6, 0.59, 0.2, 0.1, 0.0):
        assert vars(factory.params(sigma)) == vars(ref_factory.params(sigma)), f"sigma={sigma}"
    constant = MultiModalGuiderFactory.constant(MultiModalGuiderParams(cfg_scale=2.0))
    assert constant.build_from_sigma(mx.array(0.3)).params.cfg_scale == 2.0


# --- noisers -----------------------------------------------------------------------------------


def _ref_state(latent, mask):
    return ref_types.LatentState(latent=latent, denoise_mask=mask, positions=torch.zeros(1), clean_latent=latent)


def _state(latent, mask):
    return LatentState(
        latent=to_mx(latent), denoise_mask=to_mx(mask), positions=mx.zeros(1), clean_latent=to_mx(latent)
    )


def test_injected_noise_matches_reference_gaussian_noiser():
    latent = randn(1, 30, 8, seed=40)
    mask = torch.ones(1, 30, 1)
    mask[:, :6] = 0.25  # partly conditioned tokens
    seed = 1234
    ref = ref_noisers.GaussianNoiser(torch.Generator().manual_seed(seed))(_ref_state(latent, mask), noise_scale=0.8)
    # The same draw the reference noiser made from a generator with the same seed.
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    out = InjectedNoiser([to_mx(noise)])(_state(latent, mask), noise_scale=0.8)
    assert_matches("InjectedNoiser vs GaussianNoiser", out.latent, ref.latent, TOL)
    with pytest.raises(ValueError, match="all are used"):
        InjectedNoiser([])(_state(latent, mask))


def test_gaussian_noiser_is_seeded_and_blends_by_mask():
    latent, mask = mx.zeros((1, 4000, 8)), mx.concatenate([mx.zeros((1, 1000, 1)), mx.ones((1, 3000, 1))], axis=1)
    state = LatentState(latent=latent, denoise_mask=mask, positions=mx.zeros(1), clean_latent=latent)
    first, second = GaussianNoiser(7), GaussianNoiser(7)
    a, b = first(state).latent, second(state).latent
    assert mx.array_equal(a, b), "same seed, same noise"
    assert not mx.array_equal(first(state).latent, a), "successive calls draw new noise"
    assert float(mx.abs(a[:, :1000]).max()) == 0.0, "mask 0 keeps the latent"
    noisy = np.array(a[:, 1000:])
    assert abs(noisy.mean()) < 0.02 and abs(noisy.std() - 1.0) < 0.02


# --- patchifiers and latent tools --------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [1, 2])
def test_video_patchifier_matches_reference(patch_size):
    latent = randn(2, 6, 3, 4, 6, seed=50)
    patchifier, ref_patchifier = VideoLatentPatchifier(patch_size), ref_patchifiers.VideoLatentPatchifier(patch_size)
    tokens, ref_tokens = patchifier.patchify(to_mx(latent)), ref_patchifier.patchify(latent)
    assert_matches(f"VideoLatentPatchifier({patch_size}).patchify", tokens, ref_tokens, 0.0)
    shape = VideoLatentShape.from_shape(latent.shape)
    ref_shape = ref_types.VideoLatentShape.from_torch_shape(latent.shape)
    assert_matches(
        f"VideoLatentPatchifier({patch_size}).unpatchify",
        patchifier.unpatchify(tokens, shape),
        ref_patchifier.unpatchify(ref_tokens, ref_shape),
        0.0,
    )
    bounds, ref_bounds = patchifier.get_patch_grid_bounds(shape), ref_patchifier.get_patch_grid_bounds(ref_shape)
    assert_matches(f"VideoLatentPatchifier({patch_size}) grid bounds", bounds, ref_bounds, 0.0)
    assert patchifier.get_token_count(shape) == ref_patchifier.get_token_count(ref_shape)
    for causal_fix in (False, True):
        ref_pixels = ref_patchifiers.get_pixel_coords(ref_bounds.clone(), ref_types.VIDEO_SCALE_FACTORS, causal_fix)
        pixels = get_pixel_coords(bounds, ref_types.VIDEO_SCALE_FACTORS, causal_fix)
        assert_matches(f"get_pixel_coords causal_fix={causal_fix}", pixels, ref_pixels, 0.0)


@pytest.mark.parametrize("options", [{}, {"is_causal": False, "shift": 3, "hop_length": 256, "sample_rate": 24000}])
def test_audio_patchifier_matches_reference(options):
    latent = randn(2, 8, 13, 16, seed=51)
    patchifier, ref_patchifier = AudioPatchifier(1, **options), ref_patchifiers.AudioPatchifier(1, **options)
    tokens, ref_tokens = patchifier.patchify(to_mx(latent)), ref_patchifier.patchify(latent)
    assert_matches("AudioPatchifier.patchify", tokens, ref_tokens, 0.0)
    shape, ref_shape = AudioLatentShape(2, 8, 13, 16), ref_types.AudioLatentShape(2, 8, 13, 16)
    assert_matches(
        "AudioPatchifier.unpatchify",
        patchifier.unpatchify(tokens, shape),
        ref_patchifier.unpatchify(ref_tokens, ref_shape),
        0.0,
    )
    assert_matches(
        f"AudioPatchifier positions (seconds) {options}",
        patchifier.get_patch_grid_bounds(shape),
        ref_patchifier.get_patch_grid_bounds(ref_shape),
        TOL,
    )


def test_video_latent_tools_match_reference():
    shape = VideoLatentShape(batch=1, channels=8, frames=4, height=3, width=5)
    ref_shape = ref_types.VideoLatentShape(*shape)
    tools = VideoLatentTools(VideoLatentPatchifier(1), shape, fps=24.0)
    ref_tools_ = ref_tools.VideoLatentTools(ref_patchifiers.VideoLatentPatchifier(1), ref_shape, fps=24.0)
    initial = randn(*shape, seed=52)
    state = tools.create_initial_state(mx.float32, to_mx(initial))
    ref_state = ref_tools_.create_initial_state("cpu", torch.float32, initial)
    assert_states_match("VideoLatentTools.create_initial_state", state, ref_state)
    # positions: time in seconds with the causal first frame, height/width in pixels
    assert_matches("video positions", state.positions, ref_state.positions, TOL)
    assert_states_match("VideoLatentTools.unpatchify", tools.unpatchify(state), ref_tools_.unpatchify(ref_state))
    empty = tools.create_initial_state(mx.float32)
    assert float(mx.abs(empty.latent).max()) == 0.0
    with pytest.raises(ValueError, match="expected"):
        tools.create_initial_state(mx.float32, mx.zeros((1, 8, 5, 3, 5)))


def test_audio_latent_tools_match_reference():
    shape = AudioLatentShape.from_duration(batch=1, duration=0.8)
    ref_shape = ref_types.AudioLatentShape.from_duration(batch=1, duration=0.8)
    assert tuple(shape) == tuple(ref_shape)
    tools = AudioLatentTools(AudioPatchifier(1), shape)
    ref_tools_ = ref_tools.AudioLatentTools(ref_patchifiers.AudioPatchifier(1), ref_shape)
    initial = randn(*shape, seed=53)
    state = tools.create_initial_state(mx.float32, to_mx(initial))
    ref_state = ref_tools_.create_initial_state("cpu", torch.float32, initial)
    assert_states_match("AudioLatentTools.create_initial_state", state, ref_state)
    assert_states_match("AudioLatentTools.unpatchify", tools.unpatchify(state), ref_tools_.unpatchify(ref_state))


def test_latent_shapes_match_reference():
    for pixel in [(1, 121, 512, 768, 24.0), (2, 9, 64, 96, 25.0), (1, 97, 1088, 1920, 30.0)]:
        assert tuple(VideoLatentShape.from_pixel_shape(ref_types.VideoPixelShape(*pixel))) == tuple(
            ref_types.VideoLatentShape.from_pixel_shape(ref_types.VideoPixelShape(*pixel))
        )
        assert tuple(AudioLatentShape.from_video_pixel_shape(ref_types.VideoPixelShape(*pixel))) == tuple(
            ref_types.AudioLatentShape.from_video_pixel_shape(ref_types.VideoPixelShape(*pixel))
        )
    assert math.prod(VideoLatentShape(1, 128, 16, 16, 24).mask_shape()) == 16 * 16 * 24

"""The shared denoising loop against ltx-pipelines' `denoise_audio_video` and samplers, with a
tiny seeded official-layout transformer, from identical injected noise (float32, CPU)."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.components import diffusion_steps as ref_steps
from ltx_core.components import guiders as ref_guiders
from ltx_core.components.noisers import GaussianNoiser as RefGaussianNoiser
from ltx_core.components.schedulers import LTX2Scheduler as RefLTX2Scheduler
from ltx_core.conditioning import VideoConditionByKeyframeIndex as RefKeyframe
from ltx_core.conditioning import VideoConditionByLatentIndex as RefLatentIndex
from ltx_core.model.transformer.model import X0Model as RefX0Model
from ltx_core.types import VideoPixelShape as RefVideoPixelShape
from ltx_pipelines import retake as ref_retake
from ltx_pipelines.utils import constants as ref_constants
from ltx_pipelines.utils import helpers as ref_helpers
from ltx_pipelines.utils import res2s as ref_res2s
from ltx_pipelines.utils import samplers as ref_samplers
from ltx_pipelines.utils.types import PipelineComponents as RefPipelineComponents
from reference import assert_cosine, assert_matches, to_mx
from transformer_fixtures import (
    VIDEO_CHANNELS,
    build_reference_transformer,
    context_width,
    save_transformer_checkpoint,
    tiny_transformer_config,
)

from LTX_2_MLX.components import (
    CFGStarRescalingGuider,
    EulerDiffusionStep,
    InjectedNoiser,
    LTX2Scheduler,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    Res2sDiffusionStep,
    VideoPixelShape,
    distilled_sigmas,
)
from LTX_2_MLX.conditioning import (
    TemporalRegionMask,
    VideoConditionByKeyframeIndex,
    VideoConditionByLatentIndex,
)
from LTX_2_MLX.loader import load_transformer
from LTX_2_MLX.model.transformer import X0Model
from LTX_2_MLX.pipelines.denoising import (
    PipelineComponents,
    denoise_audio_video,
    gaussian_sde_noise,
    get_res2s_coefficients,
    guider_denoising_func,
    normalize_sde_noise,
)

LOOP_TOL = 1e-5
# 17 frames of 128x128 at 24 fps: 3 latent frames of 4x4 (48 video tokens), 18 audio latents.
OUTPUT_SHAPE = (1, 17, 128, 128, 24.0)
# ltx-pipelines sizes audio latents as 8 channels x 16 mel bins; the tiny DiT takes that width.
AUDIO_FEATURES = 8 * 16


def randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def tiny_av_transformer(tmp_path_factory):
    """(reference X0 model, MLX X0 model, config, checkpoint path): one tiny seeded AV DiT,
    saved in the official layout and loaded back by `load_transformer`."""
    config = tiny_transformer_config("2.0")
    config["transformer"].update(audio_in_channels=AUDIO_FEATURES, audio_out_channels=AUDIO_FEATURES)
    reference = build_reference_transformer(config, audio=True, seed=11)
    path = save_transformer_checkpoint(tmp_path_factory.mktemp("loop") / "tiny_av.safetensors", reference, config)
    return RefX0Model(reference), X0Model(load_transformer(path, dtype=mx.float32)), config, path


@pytest.fixture(scope="module")
def contexts(tiny_av_transformer):
    """Positive and negative prompt features for both streams, (reference, MLX)."""
    config = tiny_av_transformer[2]
    torch_contexts = {
        "v_p": randn(1, 7, context_width(config, audio=False), seed=20),
        "v_n": randn(1, 7, context_width(config, audio=False), seed=21),
        "a_p": randn(1, 7, context_width(config, audio=True), seed=22),
        "a_n": randn(1, 7, context_width(config, audio=True), seed=23),
    }
    return torch_contexts, {k: to_mx(v) for k, v in torch_contexts.items()}


def components():
    ref = RefPipelineComponents(dtype=torch.float32, device="cpu")
    ref.video_latent_channels = VIDEO_CHANNELS
    return ref, PipelineComponents(video_latent_channels=VIDEO_CHANNELS)


def test_pipeline_components_follow_the_transformer_config(tiny_av_transformer):
    layout = PipelineComponents.for_transformer(tiny_av_transformer[1].velocity_model.config)
    assert (layout.video_latent_channels, layout.audio_latent_channels, layout.audio_mel_bins) == (
        VIDEO_CHANNELS,
        8,
        16,
    )
    with pytest.raises(ValueError, match="audio_latent_channels"):
        PipelineComponents.for_transformer(tiny_av_transformer[1].velocity_model.config, audio_latent_channels=7)


def conditionings(seed: int = 30):
    """An image held at latent frame 0 and a keyframe appended at pixel frame 16."""
    image, keyframe = randn(1, VIDEO_CHANNELS, 1, 4, 4, seed=seed), randn(1, VIDEO_CHANNELS, 1, 4, 4, seed=seed + 1)
    ref = [RefLatentIndex(image, strength=1.0, latent_idx=0), RefKeyframe(keyframe, frame_idx=16, strength=0.9)]
    ours = [
        VideoConditionByLatentIndex(to_mx(image), strength=1.0, latent_idx=0),
        VideoConditionByKeyframeIndex(to_mx(keyframe), frame_idx=16, strength=0.9),
    ]
    return ref, ours


def noise_pair(noise_seed: int, video_tokens: int, audio_tokens: int = 18):
    """A reference GaussianNoiser and the noise it will draw (video first, then audio)."""
    generator = torch.Generator().manual_seed(noise_seed)
    video_noise = torch.randn(1, video_tokens, VIDEO_CHANNELS, generator=generator)
    audio_noise = torch.randn(1, audio_tokens, AUDIO_FEATURES, generator=generator)
    ref_noiser = RefGaussianNoiser(torch.Generator().manual_seed(noise_seed))
    return ref_noiser, InjectedNoiser([to_mx(video_noise), to_mx(audio_noise)])


class SdeNoiseTape:
    """res_2s noise for call k of a run: the reference's own normalised draw from seed k, handed
    to the reference as float64 and to MLX as float32, so both inject the same noise."""

    def __init__(self):
        self.reference_calls = 0
        self.mlx_calls = 0

    @staticmethod
    def noise(k: int, shape) -> torch.Tensor:
        return ref_samplers._get_new_noise(torch.empty(shape), torch.Generator().manual_seed(1000 + k))

    def for_reference(self, latent: torch.Tensor, _generator) -> torch.Tensor:
        self.reference_calls += 1
        return self.noise(self.reference_calls - 1, latent.shape)

    def for_mlx(self, latent: mx.array) -> mx.array:
        self.mlx_calls += 1
        return to_mx(self.noise(self.mlx_calls - 1, tuple(latent.shape)))


def guider_params(video: dict, audio: dict):
    return (
        (ref_guiders.MultiModalGuiderParams(**video), ref_guiders.MultiModalGuiderParams(**audio)),
        (MultiModalGuiderParams(**video), MultiModalGuiderParams(**audio)),
    )


def run_reference(loop, transformer, torch_contexts, guiders, sigmas, stepper, noiser, conditionings, **kwargs):
    ref_components = components()[0]
    if guiders is None:
        denoise_fn = ref_helpers.simple_denoising_func(torch_contexts["v_p"], torch_contexts["a_p"], transformer)
    else:
        video_params, audio_params = guiders
        denoise_fn = ref_helpers.multi_modal_guider_denoising_func(
            ref_guiders.MultiModalGuider(video_params, negative_context=torch_contexts["v_n"]),
            ref_guiders.MultiModalGuider(audio_params, negative_context=torch_contexts["a_n"]),
            torch_contexts["v_p"],
            torch_contexts["a_p"],
            transformer,
        )

    def denoising_loop(sigmas, video_state, audio_state, stepper):
        return loop(sigmas, video_state, audio_state, stepper, denoise_fn)

    return ref_helpers.denoise_audio_video(
        output_shape=RefVideoPixelShape(*OUTPUT_SHAPE),
        conditionings=conditionings,
        noiser=noiser,
        sigmas=sigmas,
        stepper=stepper,
        denoising_loop_fn=denoising_loop,
        components=ref_components,
        dtype=torch.float32,
        device="cpu",
        **kwargs,
    )


EULER_GUIDANCE = (
    dict(cfg_scale=3.0, stg_scale=1.0, stg_blocks=[1], rescale_scale=0.7, modality_scale=3.0),
    dict(cfg_scale=7.0, stg_scale=1.0, stg_blocks=[1], rescale_scale=0.7, modality_scale=3.0),
)
# Video guided on every other step, audio on every third: the skipped stream reuses its last
# prediction and is disabled in the transformer pass of the other.
SKIPPING_GUIDANCE = (
    dict(cfg_scale=3.0, stg_scale=1.0, stg_blocks=[0], skip_step=1),
    dict(cfg_scale=5.0, rescale_scale=0.5, skip_step=2),
)


def run_euler_case(tiny_av_transformer, contexts, guidance, steps, dtype=mx.float32, transformer=None):
    """Both loops over `steps` Euler steps with multi-modal guidance, an image at frame 0 and a
    keyframe, from the same noise. Returns ((video, audio) reference, (video, audio) MLX)."""
    ref_transformer, fp32_transformer, _, _ = tiny_av_transformer
    transformer = transformer or fp32_transformer
    torch_contexts, mlx_contexts = contexts
    mlx_contexts = {k: v.astype(dtype) for k, v in mlx_contexts.items()}
    (ref_video_params, ref_audio_params), (video_params, audio_params) = guider_params(*guidance)
    ref_conditionings, mlx_conditionings = conditionings()
    ref_noiser, noiser = noise_pair(noise_seed=5, video_tokens=48 + 16)
    ref_sigmas = RefLTX2Scheduler().execute(steps, latent=torch.empty(1, VIDEO_CHANNELS, 3, 4, 4))
    sigmas = LTX2Scheduler().execute(steps, latent=mx.zeros((1, VIDEO_CHANNELS, 3, 4, 4)))

    ref_video, ref_audio = run_reference(
        ref_samplers.euler_denoising_loop,
        ref_transformer,
        torch_contexts,
        (ref_video_params, ref_audio_params),
        ref_sigmas,
        ref_steps.EulerDiffusionStep(),
        ref_noiser,
        ref_conditionings,
    )
    video, audio = denoise_audio_video(
        VideoPixelShape(*OUTPUT_SHAPE),
        transformer,
        mlx_contexts["v_p"],
        mlx_contexts["a_p"],
        sigmas,
        EulerDiffusionStep(),
        noiser,
        conditionings=mlx_conditionings,
        video_guider=MultiModalGuider(video_params, negative_context=mlx_contexts["v_n"]),
        audio_guider=MultiModalGuider(audio_params, negative_context=mlx_contexts["a_n"]),
        components=components()[1],
        dtype=dtype,
        show_progress=False,
    )
    return (ref_video.latent, ref_audio.latent), (video.latent, audio.latent)


def test_euler_loop_with_cfg_and_stg_matches_reference(tiny_av_transformer, contexts):
    """8 Euler steps, CFG + STG + modality guidance + rescale on both streams."""
    (ref_video, ref_audio), (video, audio) = run_euler_case(tiny_av_transformer, contexts, EULER_GUIDANCE, 8)
    assert video.shape == (1, VIDEO_CHANNELS, 3, 4, 4) and audio.shape == (1, 8, 18, 16)
    assert_matches("loop euler 8 steps cfg+stg video latent", video, ref_video, LOOP_TOL)
    assert_matches("loop euler 8 steps cfg+stg audio latent", audio, ref_audio, LOOP_TOL)


def test_euler_loop_with_skipped_guidance_steps_matches_reference(tiny_av_transformer, contexts):
    (ref_video, ref_audio), (video, audio) = run_euler_case(tiny_av_transformer, contexts, SKIPPING_GUIDANCE, 6)
    assert_matches("loop euler 6 steps skip_step video latent", video, ref_video, LOOP_TOL)
    assert_matches("loop euler 6 steps skip_step audio latent", audio, ref_audio, LOOP_TOL)


def test_euler_loop_bf16_close_to_reference_fp32(tiny_av_transformer, contexts):
    """The same 8 guided steps with the DiT, contexts and latents in bfloat16."""
    bf16_transformer = X0Model(load_transformer(tiny_av_transformer[3], dtype=mx.bfloat16))
    (ref_video, ref_audio), (video, audio) = run_euler_case(
        tiny_av_transformer, contexts, EULER_GUIDANCE, 8, dtype=mx.bfloat16, transformer=bf16_transformer
    )
    assert video.dtype == mx.bfloat16
    assert_cosine("loop euler 8 steps cfg+stg bf16 video latent", video, ref_video, 0.999)
    assert_cosine("loop euler 8 steps cfg+stg bf16 audio latent", audio, ref_audio, 0.999)


def test_res2s_loop_with_guidance_matches_reference(tiny_av_transformer, contexts):
    """res_2s (two evaluations per step, SDE noise at substep and step, bong iteration, a
    final denoise to sigma 0) with multi-modal guidance, from the same noise throughout."""
    ref_transformer, transformer, _, _ = tiny_av_transformer
    torch_contexts, mlx_contexts = contexts
    (ref_video_params, ref_audio_params), (video_params, audio_params) = guider_params(
        dict(cfg_scale=3.0, stg_scale=0.0, stg_blocks=[], rescale_scale=0.45, modality_scale=3.0),
        dict(cfg_scale=7.0, stg_scale=0.0, stg_blocks=[], rescale_scale=1.0, modality_scale=3.0),
    )
    ref_conditionings, mlx_conditionings = conditionings(seed=40)
    ref_noiser, noiser = noise_pair(noise_seed=6, video_tokens=48 + 16)
    ref_sigmas = RefLTX2Scheduler().execute(6, latent=torch.empty(1, VIDEO_CHANNELS, 3, 4, 4))
    sigmas = LTX2Scheduler().execute(6, latent=mx.zeros((1, VIDEO_CHANNELS, 3, 4, 4)))
    tape = SdeNoiseTape()

    def ref_loop(sigmas, video_state, audio_state, stepper, denoise_fn):
        return ref_samplers.res2s_audio_video_denoising_loop(
            sigmas, video_state, audio_state, stepper, denoise_fn,
            new_noise_fn=tape.for_reference, model_dtype=torch.float32,
        )  # fmt: skip

    ref_video, ref_audio = run_reference(
        ref_loop,
        ref_transformer,
        torch_contexts,
        (ref_video_params, ref_audio_params),
        ref_sigmas,
        ref_steps.Res2sDiffusionStep(),
        ref_noiser,
        ref_conditionings,
    )
    video, audio = denoise_audio_video(
        VideoPixelShape(*OUTPUT_SHAPE),
        transformer,
        mlx_contexts["v_p"],
        mlx_contexts["a_p"],
        sigmas,
        Res2sDiffusionStep(),
        noiser,
        conditionings=mlx_conditionings,
        video_guider=MultiModalGuiderFactory.constant(video_params, negative_context=mlx_contexts["v_n"]),
        audio_guider=MultiModalGuiderFactory.constant(audio_params, negative_context=mlx_contexts["a_n"]),
        components=components()[1],
        show_progress=False,
        step_noise_fn=tape.for_mlx,
        substep_noise_fn=tape.for_mlx,
    )
    assert tape.mlx_calls == tape.reference_calls == 6 * 4
    assert_matches("loop res_2s 6 steps guided video latent", video.latent, ref_video.latent, LOOP_TOL)
    assert_matches("loop res_2s 6 steps guided audio latent", audio.latent, ref_audio.latent, LOOP_TOL)


def test_stage_2_refinement_video_only_matches_reference(tiny_av_transformer, contexts):
    """Distilled stage 2 with audio frozen (audio-to-video): start from given latents noised to
    the first sigma, plain denoising, Euler over the stage-2 sigmas."""
    ref_transformer, transformer, _, _ = tiny_av_transformer
    torch_contexts, mlx_contexts = contexts
    ref_sigmas = torch.tensor(ref_constants.STAGE_2_DISTILLED_SIGMA_VALUES)
    sigmas = distilled_sigmas(stage=2)
    initial_video, initial_audio = randn(1, VIDEO_CHANNELS, 3, 4, 4, seed=50), randn(1, 8, 18, 16, seed=51)
    ref_noiser, noiser = noise_pair(noise_seed=7, video_tokens=48)

    def ref_loop(sigmas, video_state, audio_state, stepper):
        denoise_fn = ref_helpers.simple_denoising_func(torch_contexts["v_p"], torch_contexts["a_p"], ref_transformer)
        return ref_samplers.euler_denoising_loop(sigmas, video_state, audio_state, stepper, denoise_fn)

    ref_video = ref_helpers.denoise_video_only(
        output_shape=RefVideoPixelShape(*OUTPUT_SHAPE),
        conditionings=[],
        noiser=ref_noiser,
        sigmas=ref_sigmas,
        stepper=ref_steps.EulerDiffusionStep(),
        denoising_loop_fn=ref_loop,
        components=components()[0],
        dtype=torch.float32,
        device="cpu",
        noise_scale=ref_sigmas[0],
        initial_video_latent=initial_video,
        initial_audio_latent=initial_audio,
    )
    video, audio = denoise_audio_video(
        VideoPixelShape(*OUTPUT_SHAPE),
        transformer,
        mlx_contexts["v_p"],
        mlx_contexts["a_p"],
        sigmas,
        EulerDiffusionStep(),
        noiser,
        denoise_audio=False,
        components=components()[1],
        noise_scale=sigmas[0],
        initial_video_latent=to_mx(initial_video),
        initial_audio_latent=to_mx(initial_audio),
        show_progress=False,
    )
    assert_matches("loop stage-2 video-only video latent", video.latent, ref_video.latent, LOOP_TOL)
    assert_matches("loop stage-2 video-only audio kept", audio.latent, initial_audio, 0.0)


def test_distilled_sigmas_match_reference():
    assert_matches(
        "distilled sigmas stage 1", distilled_sigmas(1), torch.tensor(ref_constants.DISTILLED_SIGMA_VALUES), 0.0
    )
    assert_matches(
        "distilled sigmas stage 2", distilled_sigmas(2), torch.tensor(ref_constants.STAGE_2_DISTILLED_SIGMA_VALUES), 0.0
    )


def test_res2s_coefficients_and_noise_normalisation_match_reference():
    for h in (1e-12, 0.01, 0.3, 0.69, 1.7):
        assert np.allclose(get_res2s_coefficients(h), ref_res2s.get_res2s_coefficients(h, {}), rtol=1e-14, atol=0)
    raw = randn(1, 60, 16, seed=60, dtype=torch.float64)
    ref = ref_samplers._get_new_noise(torch.empty(1, 60, 16), torch.Generator().manual_seed(60))
    assert torch.equal(ref_samplers._channelwise_normalize((raw - raw.mean()) / raw.std()), ref)
    assert_matches("res_2s noise normalisation", normalize_sde_noise(to_mx(raw)), ref, 1e-6)


def test_default_res2s_noise_is_seeded_and_normalised():
    latent = mx.zeros((1, 500, 16))
    first, again = gaussian_sde_noise(3), gaussian_sde_noise(3)
    a, b = first(latent), again(latent)
    assert mx.array_equal(a, b) and not mx.array_equal(first(latent), a)
    values = np.array(a)
    assert abs(values.mean()) < 1e-5 and abs(values.std(ddof=1) - 1.0) < 1e-5


def test_retake_loop_with_cfg_star_matches_reference(tiny_av_transformer, contexts):
    """Retake: given latents, only [0.3 s, 0.55 s) regenerated in both streams (temporal region
    masks), CFG* guidance through `guider_denoising_func`, 4 Euler steps. The reference runs
    ltx-pipelines' retake flow (noise_video_state / noise_audio_state, loop, clear, unpatchify)."""
    ref_transformer, transformer, _, _ = tiny_av_transformer
    torch_contexts, mlx_contexts = contexts
    ref_components, mlx_components = components()
    fps = OUTPUT_SHAPE[-1]
    initial_video, initial_audio = randn(1, VIDEO_CHANNELS, 3, 4, 4, seed=70), randn(1, 8, 18, 16, seed=71)
    ref_noiser, noiser = noise_pair(noise_seed=8, video_tokens=48)
    ref_sigmas = RefLTX2Scheduler().execute(4)
    sigmas = LTX2Scheduler().execute(4)

    ref_region = ref_retake.TemporalRegionMask(start_time=0.3, end_time=0.55, fps=fps)
    ref_video_state, ref_video_tools = ref_helpers.noise_video_state(
        RefVideoPixelShape(*OUTPUT_SHAPE), ref_noiser, [ref_region], ref_components, torch.float32, "cpu",
        initial_latent=initial_video,
    )  # fmt: skip
    ref_audio_state, ref_audio_tools = ref_helpers.noise_audio_state(
        RefVideoPixelShape(*OUTPUT_SHAPE), ref_noiser, [ref_region], ref_components, torch.float32, "cpu",
        initial_latent=initial_audio,
    )  # fmt: skip
    ref_denoise_fn = ref_helpers.guider_denoising_func(
        ref_guiders.CFGStarRescalingGuider(3.0), torch_contexts["v_p"], torch_contexts["v_n"],
        torch_contexts["a_p"], torch_contexts["a_n"], ref_transformer,
    )  # fmt: skip
    ref_video_state, ref_audio_state = ref_samplers.euler_denoising_loop(
        ref_sigmas, ref_video_state, ref_audio_state, ref_steps.EulerDiffusionStep(), ref_denoise_fn
    )
    ref_video = ref_video_tools.unpatchify(ref_video_tools.clear_conditioning(ref_video_state)).latent
    ref_audio = ref_audio_tools.unpatchify(ref_audio_tools.clear_conditioning(ref_audio_state)).latent

    region = TemporalRegionMask(start_time=0.3, end_time=0.55, fps=fps)
    denoise_fn = guider_denoising_func(
        CFGStarRescalingGuider(3.0), mlx_contexts["v_p"], mlx_contexts["v_n"], mlx_contexts["a_p"],
        mlx_contexts["a_n"], transformer,
    )  # fmt: skip
    video, audio = denoise_audio_video(
        VideoPixelShape(*OUTPUT_SHAPE),
        transformer,
        mlx_contexts["v_p"],
        mlx_contexts["a_p"],
        sigmas,
        EulerDiffusionStep(),
        noiser,
        conditionings=[region],
        audio_conditionings=[region],
        denoise_fn=denoise_fn,
        components=mlx_components,
        initial_video_latent=to_mx(initial_video),
        initial_audio_latent=to_mx(initial_audio),
        show_progress=False,
    )
    assert_matches("loop retake cfg* video latent", video.latent, ref_video, LOOP_TOL)
    assert_matches("loop retake cfg* audio latent", audio.latent, ref_audio, LOOP_TOL)
    # Outside the region the given latents come back untouched: video latent frame 0 covers
    # pixel frame 0 (t < 0.3 s), audio latents before 0.3 s.
    assert_matches("retake keeps video outside the region", video.latent[:, :, :1], initial_video[:, :, :1], 0.0)
    assert_matches("retake keeps audio outside the region", audio.latent[:, :, :5], initial_audio[:, :, :5], 0.0)


def test_res2s_loop_per_token_sigmas_matches_reference(tiny_av_transformer, contexts):
    """res_2s with legacy_mode=False (each token steps between its own sigmas, sigma times its
    denoise mask), no guidance, an image held at 0.6 strength, bong iteration off."""
    ref_transformer, transformer, _, _ = tiny_av_transformer
    torch_contexts, mlx_contexts = contexts
    image = randn(1, VIDEO_CHANNELS, 1, 4, 4, seed=80)
    ref_noiser, noiser = noise_pair(noise_seed=9, video_tokens=48)
    ref_sigmas = RefLTX2Scheduler().execute(4, latent=torch.empty(1, VIDEO_CHANNELS, 3, 4, 4))
    sigmas = LTX2Scheduler().execute(4, latent=mx.zeros((1, VIDEO_CHANNELS, 3, 4, 4)))
    tape = SdeNoiseTape()

    def ref_loop(sigmas, video_state, audio_state, stepper, denoise_fn):
        return ref_samplers.res2s_audio_video_denoising_loop(
            sigmas, video_state, audio_state, stepper, denoise_fn,
            new_noise_fn=tape.for_reference, model_dtype=torch.float32, legacy_mode=False, bongmath=False,
        )  # fmt: skip

    ref_video, ref_audio = run_reference(
        ref_loop,
        ref_transformer,
        torch_contexts,
        None,
        ref_sigmas,
        ref_steps.Res2sDiffusionStep(),
        ref_noiser,
        [RefLatentIndex(image, strength=0.6, latent_idx=0)],
    )
    video, audio = denoise_audio_video(
        VideoPixelShape(*OUTPUT_SHAPE),
        transformer,
        mlx_contexts["v_p"],
        mlx_contexts["a_p"],
        sigmas,
        Res2sDiffusionStep(),
        noiser,
        conditionings=[VideoConditionByLatentIndex(to_mx(image), strength=0.6, latent_idx=0)],
        components=components()[1],
        show_progress=False,
        step_noise_fn=tape.for_mlx,
        substep_noise_fn=tape.for_mlx,
        legacy_mode=False,
        bongmath=False,
    )
    assert tape.mlx_calls == tape.reference_calls == 4 * 4
    assert_matches("loop res_2s per-token sigmas video latent", video.latent, ref_video.latent, LOOP_TOL)
    assert_matches("loop res_2s per-token sigmas audio latent", audio.latent, ref_audio.latent, LOOP_TOL)

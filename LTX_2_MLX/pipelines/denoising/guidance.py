"""Denoising functions: one guided (or plain) transformer evaluation per call, turning the
latent states at a sigma into denoised latents (ltx-pipelines `utils/helpers.py`)."""

from dataclasses import dataclass
from typing import Protocol

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.guiders import (
    GuiderProtocol,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    create_multimodal_guider_factory,
)
from LTX_2_MLX.components.types import LatentState
from LTX_2_MLX.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from LTX_2_MLX.model.transformer.modality import Modality
from LTX_2_MLX.pipelines.denoising.states import timesteps_from_mask


class X0Transformer(Protocol):
    """The DiT as the loop sees it (`X0Model`): denoised video and audio latents."""

    def __call__(
        self, video: Modality, audio: Modality, perturbations: BatchedPerturbationConfig | None
    ) -> tuple[mx.array, mx.array]: ...


@dataclass(frozen=True)
class TransformerPass:
    """One DiT evaluation a guided step needs: the two streams and what is perturbed."""

    video: Modality
    audio: Modality
    perturbations: BatchedPerturbationConfig | None = None


def evaluate_passes(transformer: X0Transformer, passes: list[TransformerPass]) -> list[tuple[mx.array, mx.array]]:
    """(denoised_video, denoised_audio) per pass, in order. A transformer with its own
    `evaluate_passes` (guidance-parallel: passes spread over processes) evaluates them; one
    with `forward_passes` (X0Model: a streamed DiT reads its blocks once for all of them) is
    given them together; otherwise they run one after the other."""
    spread = getattr(transformer, "evaluate_passes", None)
    if spread is not None:
        return spread(passes)
    together = getattr(transformer, "forward_passes", None)
    if together is not None:
        return together([(p.video, p.audio, p.perturbations) for p in passes])
    return [transformer(video=p.video, audio=p.audio, perturbations=p.perturbations) for p in passes]


class DenoisingFunc(Protocol):
    """(video_state, audio_state, sigmas, step_index) -> (denoised_video, denoised_audio)."""

    def __call__(
        self, video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]: ...


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


def simple_denoising_func(
    video_context: mx.array, audio_context: mx.array, transformer: X0Transformer
) -> DenoisingFunc:
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
    transformer: X0Transformer,
) -> DenoisingFunc:
    """One delta guider (CFG, CFG*, APG) applied to both streams from positive / negative
    prompt predictions."""

    def guider_denoising_step(
        video_state: LatentState, audio_state: LatentState, sigmas: mx.array, step_index: int
    ) -> tuple[mx.array, mx.array]:
        sigma = sigmas[step_index]
        contexts = [(v_context_p, a_context_p)] + ([(v_context_n, a_context_n)] if guider.enabled() else [])
        passes = [
            TransformerPass(
                modality_from_latent_state(video_state, v_context, sigma),
                modality_from_latent_state(audio_state, a_context, sigma),
            )
            for v_context, a_context in contexts
        ]
        outputs = evaluate_passes(transformer, passes)
        denoised_video, denoised_audio = outputs[0]
        if guider.enabled():
            neg_denoised_video, neg_denoised_audio = outputs[1]
            denoised_video = denoised_video + guider.delta(denoised_video, neg_denoised_video)
            denoised_audio = denoised_audio + guider.delta(denoised_audio, neg_denoised_audio)
        return denoised_video, denoised_audio

    return guider_denoising_step


def multi_modal_guider_denoising_func(
    video_guider: MultiModalGuider,
    audio_guider: MultiModalGuider,
    v_context: mx.array,
    a_context: mx.array,
    transformer: X0Transformer,
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
        passes = {"positive": TransformerPass(pos_video, pos_audio)}

        if video_guider.do_unconditional_generation() or audio_guider.do_unconditional_generation():
            for name, guider in (("video", video_guider), ("audio", audio_guider)):
                if guider.do_unconditional_generation() and guider.negative_context is None:
                    raise ValueError(
                        f"the {name} guider has cfg_scale={guider.params.cfg_scale} but no negative_context: "
                        "pass the encoded negative prompt, or set cfg_scale=1.0"
                    )
            v_negative = video_guider.negative_context if video_guider.negative_context is not None else v_context
            a_negative = audio_guider.negative_context if audio_guider.negative_context is not None else a_context
            passes["negative"] = TransformerPass(
                modality_from_latent_state(video_state, v_negative, sigma),
                modality_from_latent_state(audio_state, a_negative, sigma),
            )

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
            passes["perturbed"] = TransformerPass(
                pos_video, pos_audio, _batched(PerturbationConfig(perturbations=perturbations), batch_size)
            )

        if video_guider.do_isolated_modality_generation() or audio_guider.do_isolated_modality_generation():
            perturbations = [
                Perturbation(type=PerturbationType.SKIP_A2V_CROSS_ATTN, blocks=None),
                Perturbation(type=PerturbationType.SKIP_V2A_CROSS_ATTN, blocks=None),
            ]
            passes["isolated"] = TransformerPass(
                pos_video, pos_audio, _batched(PerturbationConfig(perturbations=perturbations), batch_size)
            )

        # A pass a guider does not need contributes 0.0 to its formula.
        outputs = dict(zip(passes, evaluate_passes(transformer, list(passes.values()))))
        denoised_video, denoised_audio = outputs["positive"]
        neg_denoised_video, neg_denoised_audio = outputs.get("negative", (0.0, 0.0))
        ptb_denoised_video, ptb_denoised_audio = outputs.get("perturbed", (0.0, 0.0))
        mod_denoised_video, mod_denoised_audio = outputs.get("isolated", (0.0, 0.0))

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
    transformer: X0Transformer,
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


def make_denoising_func(
    transformer: X0Transformer,
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

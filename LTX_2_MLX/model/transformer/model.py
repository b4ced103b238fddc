"""The LTX-2 diffusion transformer: video and audio token streams through shared blocks."""

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.guidance.perturbations import BatchedPerturbationConfig
from LTX_2_MLX.model.common.one_ahead import OneAhead
from LTX_2_MLX.model.transformer.config import LTXModelConfig
from LTX_2_MLX.model.transformer.layers import (
    AdaLayerNormSingle,
    PixArtAlphaTextProjection,
    adaln_embedding_coefficient,
)
from LTX_2_MLX.model.transformer.modality import Modality
from LTX_2_MLX.model.transformer.rope import precompute_freqs_cis
from LTX_2_MLX.model.transformer.transformer_block import BasicAVTransformerBlock, StreamConfig, TransformerArgs


def context_attention_bias(context_mask: mx.array | None, dtype: mx.Dtype) -> mx.array | None:
    """(B, S) 0/1 mask -> (B, 1, 1, S) additive bias: 0 where kept, -max where padded.

    A floating mask is taken to be a bias already, as the reference does.
    """
    if context_mask is None or mx.issubdtype(context_mask.dtype, mx.floating):
        return context_mask
    bias = (context_mask.astype(dtype) - 1) * mx.finfo(dtype).max
    return bias.reshape(context_mask.shape[0], 1, 1, context_mask.shape[-1])


# Smallest normal number per dtype (bfloat16 shares float32's exponent range).
_TINY = {mx.float32: 1.1754944e-38, mx.bfloat16: 1.1754944e-38, mx.float16: 6.1035156e-05}


def self_attention_bias(attention_mask: mx.array | None, dtype: mx.Dtype) -> mx.array | None:
    """(B, T, T) strengths in [0, 1] -> (B, 1, T, T) additive log-space bias; 0 masks fully."""
    if attention_mask is None:
        return None
    strength = attention_mask.astype(mx.float32)
    log_strength = mx.log(mx.maximum(strength, _TINY[dtype])).astype(dtype)
    bias = mx.where(strength > 0, log_strength, mx.array(mx.finfo(dtype).min, dtype))
    return bias[:, None]


class LTXModel(nn.Module):
    def __init__(self, config: LTXModelConfig):
        super().__init__()
        self.config = config
        has_audio = config.model_type.has_audio
        coefficient = adaln_embedding_coefficient(config.cross_attention_adaln)
        with_caption_projection = not config.caption_proj_before_connector

        dim = config.inner_dim
        self.patchify_proj = nn.Linear(config.in_channels, dim)
        if with_caption_projection:
            self.caption_projection = PixArtAlphaTextProjection(config.caption_channels, dim)
        self.adaln_single = AdaLayerNormSingle(dim, coefficient)
        if config.cross_attention_adaln:
            self.prompt_adaln_single = AdaLayerNormSingle(dim, 2)
        self.scale_shift_table = mx.zeros((2, dim))
        self.proj_out = nn.Linear(dim, config.out_channels)

        if has_audio:
            audio_dim = config.audio_inner_dim
            self.audio_patchify_proj = nn.Linear(config.audio_in_channels, audio_dim)
            if with_caption_projection:
                self.audio_caption_projection = PixArtAlphaTextProjection(config.caption_channels, audio_dim)
            self.audio_adaln_single = AdaLayerNormSingle(audio_dim, coefficient)
            if config.cross_attention_adaln:
                self.audio_prompt_adaln_single = AdaLayerNormSingle(audio_dim, 2)
            self.audio_scale_shift_table = mx.zeros((2, audio_dim))
            self.audio_proj_out = nn.Linear(audio_dim, config.audio_out_channels)
            self.av_ca_video_scale_shift_adaln_single = AdaLayerNormSingle(dim, 4)
            self.av_ca_audio_scale_shift_adaln_single = AdaLayerNormSingle(audio_dim, 4)
            self.av_ca_a2v_gate_adaln_single = AdaLayerNormSingle(dim, 1)
            self.av_ca_v2a_gate_adaln_single = AdaLayerNormSingle(audio_dim, 1)

        video_stream = StreamConfig(
            dim, config.num_attention_heads, config.attention_head_dim, config.cross_attention_dim,
            config.apply_gated_attention, config.cross_attention_adaln,
        )  # fmt: skip
        audio_stream = (
            StreamConfig(
                config.audio_inner_dim,
                config.audio_num_attention_heads,
                config.audio_attention_head_dim,
                config.audio_cross_attention_dim,
                config.apply_gated_attention,
                config.cross_attention_adaln,
            )  # fmt: skip
            if has_audio
            else None
        )
        self.transformer_blocks = [
            BasicAVTransformerBlock(i, video_stream, audio_stream, config.rope_type, config.norm_eps)
            for i in range(config.num_layers)
        ]
        # Blocks per evaluation: each evaluation is one bounded piece of GPU work (macOS stops a
        # command buffer that runs too long while a display is attached). 1 also bounds the
        # live activations and is what streamed blocks (loader.streaming) are read ahead of.
        self.eval_blocks = 1

    # -- preparing one stream's arguments (the reference's TransformerArgsPreprocessor) --

    def _embed_timestep(self, adaln: AdaLayerNormSingle, timesteps: mx.array, batch: int, dtype: mx.Dtype):
        scaled = timesteps * self.config.timestep_scale_multiplier
        modulation, embedded = adaln(scaled.reshape(-1), dtype)
        return modulation.reshape(batch, -1, modulation.shape[-1]), embedded.reshape(batch, -1, embedded.shape[-1])

    def _rope(self, positions: mx.array, dim: int, max_pos: list[int], heads: int, dtype: mx.Dtype, middle: bool):
        c = self.config
        return precompute_freqs_cis(
            positions, dim, dtype, c.positional_embedding_theta, max_pos, middle, heads, c.rope_type,
            c.double_precision_rope,
        )  # fmt: skip

    def _prepare(self, modality: Modality, cross: Modality | None, audio: bool) -> TransformerArgs:
        c = self.config
        prefix = "audio_" if audio else ""
        dtype = modality.latent.dtype
        x = self[prefix + "patchify_proj"](modality.latent)
        batch = x.shape[0]
        timesteps, embedded = self._embed_timestep(
            self[prefix + "adaln_single"], shared_timestep(modality.timesteps), batch, dtype
        )
        prompt_timestep = None
        if c.cross_attention_adaln:
            prompt_timestep, _ = self._embed_timestep(
                self[prefix + "prompt_adaln_single"], modality.sigma, batch, dtype
            )
        context = modality.context
        if prefix + "caption_projection" in self:
            context = self[prefix + "caption_projection"](context)
        context = context.reshape(batch, -1, x.shape[-1])
        heads = c.audio_num_attention_heads if audio else c.num_attention_heads
        dim = c.audio_inner_dim if audio else c.inner_dim
        max_pos = c.audio_positional_embedding_max_pos if audio else c.positional_embedding_max_pos
        args = TransformerArgs(
            x=x,
            context=context,
            context_mask=context_attention_bias(modality.context_mask, dtype),
            timesteps=timesteps,
            embedded_timestep=embedded,
            positional_embeddings=self._rope(modality.positions, dim, max_pos, heads, dtype, c.use_middle_indices_grid),
            cross_positional_embeddings=None,
            cross_scale_shift_timestep=None,
            cross_gate_timestep=None,
            enabled=modality.enabled,
            prompt_timestep=prompt_timestep,
            self_attention_mask=self_attention_bias(modality.attention_mask, dtype),
        )
        if cross is None or not c.model_type.has_audio:
            return args
        return self._add_cross_modal(args, modality, cross, audio, heads)

    def _add_cross_modal(
        self, args: TransformerArgs, modality: Modality, cross: Modality, audio: bool, heads: int
    ) -> TransformerArgs:
        """Cross-modal RoPE over time alone, and AdaLN driven by the other stream's sigma."""
        c = self.config
        dtype = modality.latent.dtype
        batch = args.x.shape[0]
        if cross.sigma.size > 1 and (cross.sigma.ndim != 1 or cross.sigma.shape[0] != batch):
            raise ValueError("the other modality's sigma must be (B,) with the same batch size")
        cross_max_pos = max(c.positional_embedding_max_pos[0], c.audio_positional_embedding_max_pos[0])
        cross_pe = self._rope(
            modality.positions[:, 0:1], c.audio_cross_attention_dim, [cross_max_pos], heads, dtype, True
        )
        cross_timestep = (cross.sigma * c.timestep_scale_multiplier).reshape(-1)
        scale_shift_adaln = (
            self.av_ca_audio_scale_shift_adaln_single if audio else self.av_ca_video_scale_shift_adaln_single
        )
        gate_adaln = self.av_ca_v2a_gate_adaln_single if audio else self.av_ca_a2v_gate_adaln_single
        scale_shift, _ = scale_shift_adaln(cross_timestep, dtype)
        gate_factor = c.av_ca_timestep_scale_multiplier / c.timestep_scale_multiplier
        gate, _ = gate_adaln(cross_timestep * gate_factor, dtype)
        return TransformerArgs(
            **{
                **args.__dict__,
                "cross_positional_embeddings": cross_pe,
                "cross_scale_shift_timestep": scale_shift.reshape(batch, -1, scale_shift.shape[-1]),
                "cross_gate_timestep": gate.reshape(batch, -1, gate.shape[-1]),
            }
        )

    def _output(self, args: TransformerArgs, audio: bool) -> mx.array:
        prefix = "audio_" if audio else ""
        table = self[prefix + "scale_shift_table"].astype(args.x.dtype)
        values = table[None, None] + args.embedded_timestep[:, :, None]
        shift, scale = values[:, :, 0], values[:, :, 1]
        x = mx.fast.layer_norm(args.x, None, None, self.config.norm_eps)
        return self[prefix + "proj_out"](x * (1 + scale) + shift)

    def __call__(
        self,
        video: Modality | None,
        audio: Modality | None = None,
        perturbations: BatchedPerturbationConfig | None = None,
    ) -> tuple[mx.array | None, mx.array | None]:
        """Velocities (B, T, out_channels) for each stream given; None for a stream not given."""
        return self._run_blocks([self._arguments(video, audio, perturbations)])[0]

    def forward_passes(
        self, passes: list[tuple[Modality | None, Modality | None, BatchedPerturbationConfig | None]]
    ) -> list[tuple[mx.array | None, mx.array | None]]:
        """`__call__` of each (video, audio, perturbations), each computed exactly as alone.

        Streamed blocks (read from the file as they run) take every pass before the next block,
        so a guided step reads the weights once, not once per pass; resident blocks run the
        passes one after the other, one pass's activations at a time."""
        if not getattr(self.transformer_blocks, "streamed", False):
            return [self(*one) for one in passes]
        return self._run_blocks([self._arguments(*one) for one in passes])

    def _arguments(self, video, audio, perturbations) -> tuple:
        if audio is not None and not self.config.model_type.has_audio:
            raise ValueError("this checkpoint is a video-only model: it takes no audio modality")
        if video is None and audio is None:
            raise ValueError("give at least one of video and audio")
        video_args = self._prepare(video, audio, audio=False) if video is not None else None
        audio_args = self._prepare(audio, video, audio=True) if audio is not None else None
        return video_args, audio_args, perturbations

    def _run_blocks(self, passes: list[tuple]) -> list[tuple[mx.array | None, mx.array | None]]:
        # Blocks (or groups of eval_blocks) evaluated one ahead, which bounds the live
        # activations (at 19B, 768x512x121: 3.0 GB over the weights instead of 8.7 GB for the
        # whole lazy graph) and keeps the GPU from waiting for Python.
        states = [[video_args, audio_args] for video_args, audio_args, _ in passes]
        pieces = OneAhead()
        for index, block in enumerate(self.transformer_blocks):
            for state, (_, _, perturbations) in zip(states, passes):
                state[0], state[1] = block(state[0], state[1], perturbations)
            if (index + 1) % self.eval_blocks:
                continue
            pieces.queue([args.x for state in states for args in state if args is not None])
        return [
            (
                self._output(video_args, audio=False) if video_args is not None else None,
                self._output(audio_args, audio=True) if audio_args is not None else None,
            )
            for video_args, audio_args in states
        ]


def shared_timestep(timesteps: mx.array) -> mx.array:
    """Per-token timesteps (B, T[, 1]) whose tokens all hold one value per batch row, as
    (B, 1[, 1]): the AdaLN values are then computed once per row and broadcast over the tokens,
    instead of computed per token and read back per token in every block (as in a step with no
    conditioned tokens, every token at the same sigma). Others are returned as they are."""
    if timesteps.ndim < 2 or timesteps.shape[1] < 2:
        return timesteps
    first = timesteps[:, :1]
    return first if mx.all(timesteps == first).item() else timesteps


def to_denoised(sample: mx.array, velocity: mx.array, sigma: mx.array | float) -> mx.array:
    """x0 = x_t - sigma * v, computed in float32."""
    sigma = sigma.astype(mx.float32) if isinstance(sigma, mx.array) else sigma
    return (sample.astype(mx.float32) - velocity.astype(mx.float32) * sigma).astype(sample.dtype)


class X0Model(nn.Module):
    """Wraps a velocity model to return denoised latents, sigma taken per token."""

    def __init__(self, velocity_model: LTXModel):
        super().__init__()
        self.velocity_model = velocity_model

    def __call__(
        self,
        video: Modality | None,
        audio: Modality | None = None,
        perturbations: BatchedPerturbationConfig | None = None,
    ) -> tuple[mx.array | None, mx.array | None]:
        return self._denoised(video, audio, self.velocity_model(video, audio, perturbations))

    def forward_passes(self, passes: list[tuple]) -> list[tuple[mx.array | None, mx.array | None]]:
        """`__call__` of each (video, audio, perturbations) (LTXModel.forward_passes)."""
        velocities = self.velocity_model.forward_passes(passes)
        return [self._denoised(video, audio, velocity) for (video, audio, _), velocity in zip(passes, velocities)]

    @staticmethod
    def _denoised(video, audio, velocities) -> tuple[mx.array | None, mx.array | None]:
        video_velocity, audio_velocity = velocities
        denoised_video = (
            to_denoised(video.latent, video_velocity, video.timesteps) if video_velocity is not None else None
        )
        denoised_audio = (
            to_denoised(audio.latent, audio_velocity, audio.timesteps) if audio_velocity is not None else None
        )
        return denoised_video, denoised_audio

"""One DiT block: per stream self-attention, text cross-attention, audio<->video
cross-attention and feed-forward, each modulated by the timestep (AdaLN)."""

from dataclasses import dataclass, replace

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.guidance.perturbations import BatchedPerturbationConfig, PerturbationType
from LTX_2_MLX.model.transformer.attention import Attention
from LTX_2_MLX.model.transformer.layers import FeedForward, adaln_embedding_coefficient
from LTX_2_MLX.model.transformer.modulation import AdaValue, Normed, ada_values, gated_residual, modulate, rms_norm
from LTX_2_MLX.model.transformer.rope import LTXRopeType


@dataclass(frozen=True)
class StreamConfig:
    dim: int
    heads: int
    d_head: int
    context_dim: int
    apply_gated_attention: bool = False
    cross_attention_adaln: bool = False


@dataclass(frozen=True)
class TransformerArgs:
    """One stream's state between blocks, with everything precomputed once per forward."""

    x: mx.array
    context: mx.array
    context_mask: mx.array | None
    timesteps: mx.array  # (B, T or 1, coefficient * dim)
    embedded_timestep: mx.array  # (B, T or 1, dim)
    positional_embeddings: tuple[mx.array, mx.array]
    cross_positional_embeddings: tuple[mx.array, mx.array] | None
    cross_scale_shift_timestep: mx.array | None
    cross_gate_timestep: mx.array | None
    enabled: bool
    prompt_timestep: mx.array | None = None
    self_attention_mask: mx.array | None = None


class BasicAVTransformerBlock(nn.Module):
    def __init__(
        self,
        idx: int,
        video: StreamConfig | None,
        audio: StreamConfig | None,
        rope_type: LTXRopeType,
        norm_eps: float,
    ):
        super().__init__()
        self.idx = idx
        self.norm_eps = norm_eps

        def attention(query: StreamConfig, context_dim: int | None, heads: StreamConfig) -> Attention:
            return Attention(
                query.dim, context_dim, heads.heads, heads.d_head, norm_eps, rope_type, query.apply_gated_attention
            )

        if video is not None:
            self.attn1 = attention(video, None, video)
            self.attn2 = attention(video, video.context_dim, video)
            self.ff = FeedForward(video.dim, video.dim)
            self.scale_shift_table = mx.zeros((adaln_embedding_coefficient(video.cross_attention_adaln), video.dim))
        if audio is not None:
            self.audio_attn1 = attention(audio, None, audio)
            self.audio_attn2 = attention(audio, audio.context_dim, audio)
            self.audio_ff = FeedForward(audio.dim, audio.dim)
            self.audio_scale_shift_table = mx.zeros(
                (adaln_embedding_coefficient(audio.cross_attention_adaln), audio.dim)
            )
        if audio is not None and video is not None:
            # Both directions run at the audio stream's head layout.
            self.audio_to_video_attn = attention(video, audio.dim, audio)
            self.video_to_audio_attn = attention(audio, video.dim, audio)
            self.scale_shift_table_a2v_ca_audio = mx.zeros((5, audio.dim))
            self.scale_shift_table_a2v_ca_video = mx.zeros((5, video.dim))
        self.cross_attention_adaln = (video is not None and video.cross_attention_adaln) or (
            audio is not None and audio.cross_attention_adaln
        )
        if self.cross_attention_adaln and video is not None:
            self.prompt_scale_shift_table = mx.zeros((2, video.dim))
        if self.cross_attention_adaln and audio is not None:
            self.audio_prompt_scale_shift_table = mx.zeros((2, audio.dim))

    def _norm(self, x: mx.array) -> mx.array:
        return rms_norm(x, self.norm_eps)

    def _self_attention(
        self, x: mx.array, args: TransformerArgs, attn: Attention, table: mx.array,
        perturbations: BatchedPerturbationConfig, kind: PerturbationType,
    ) -> mx.array:  # fmt: skip
        shift, scale, gate = ada_values(table, args.timesteps, 0, 3)
        all_perturbed = perturbations.all_in_batch(kind, self.idx)
        some_perturbed = perturbations.any_in_batch(kind, self.idx) and not all_perturbed
        update = attn(
            Normed(x, self.norm_eps).modulated(scale, shift),
            pe=args.positional_embeddings,
            mask=args.self_attention_mask,
            perturbation_mask=perturbations.mask_like(kind, self.idx, x) if some_perturbed else None,
            all_perturbed=all_perturbed,
        )
        return gated_residual(x, update, gate)

    def _text_cross_attention(
        self, x: mx.array, args: TransformerArgs, attn: Attention, table: mx.array, prompt_table: mx.array | None
    ) -> mx.array:
        if not self.cross_attention_adaln:
            return x + attn(self._norm(x), context=args.context, mask=args.context_mask)
        shift_q, scale_q, gate = ada_values(table, args.timesteps, 6, 9)
        shift_kv, scale_kv = ada_values(prompt_table, args.prompt_timestep, 0, 2)
        context = modulate(args.context, scale_kv, shift_kv)
        update = attn(Normed(x, self.norm_eps).modulated(scale_q, shift_q), context=context, mask=args.context_mask)
        return gated_residual(x, update, gate)

    def _feed_forward(self, x: mx.array, args: TransformerArgs, ff: FeedForward, table: mx.array) -> mx.array:
        shift, scale, gate = ada_values(table, args.timesteps, 3, 6)
        return gated_residual(x, ff(Normed(x, self.norm_eps).modulated(scale, shift)), gate)

    @staticmethod
    def _cross_modal_values(table: mx.array, args: TransformerArgs, start: int) -> tuple[mx.array, ...]:
        """(scale, shift) rows start:start+2 of the first four, and the gate (row 4)."""
        scale, shift = ada_values(table[:4], args.cross_scale_shift_timestep, start, start + 2)
        (gate,) = ada_values(table[4:], args.cross_gate_timestep, 0, 1)
        return scale, shift, gate

    def _cross_modal_residual(
        self, x: mx.array, update: mx.array, gate: AdaValue, perturbations: BatchedPerturbationConfig,
        kind: PerturbationType,
    ) -> mx.array:  # fmt: skip
        """x + update * gate, times 0 on the rows that skip this cross-attention (STG)."""
        if not perturbations.any_in_batch(kind, self.idx):
            return gated_residual(x, update, gate)
        keep = perturbations.mask_like(kind, self.idx, x)
        gate_row, gate_t = gate.parts()
        return x + update * (gate_row + gate_t) * keep

    def __call__(
        self,
        video: TransformerArgs | None,
        audio: TransformerArgs | None,
        perturbations: BatchedPerturbationConfig | None = None,
    ) -> tuple[TransformerArgs | None, TransformerArgs | None]:
        if video is None and audio is None:
            raise ValueError("At least one of video or audio must be provided")
        if perturbations is None:
            perturbations = BatchedPerturbationConfig.empty((video or audio).x.shape[0])
        vx = video.x if video is not None else None
        ax = audio.x if audio is not None else None
        run_video = video is not None and video.enabled and vx.size > 0
        run_audio = audio is not None and audio.enabled and ax.size > 0
        run_a2v = run_video and audio is not None and ax.size > 0
        run_v2a = run_audio and video is not None and vx.size > 0

        if run_video:
            vx = self._self_attention(
                vx, video, self.attn1, self.scale_shift_table, perturbations, PerturbationType.SKIP_VIDEO_SELF_ATTN
            )
            vx = self._text_cross_attention(
                vx, video, self.attn2, self.scale_shift_table, getattr(self, "prompt_scale_shift_table", None)
            )
        if run_audio:
            ax = self._self_attention(
                ax, audio, self.audio_attn1, self.audio_scale_shift_table, perturbations,
                PerturbationType.SKIP_AUDIO_SELF_ATTN,
            )  # fmt: skip
            ax = self._text_cross_attention(
                ax, audio, self.audio_attn2, self.audio_scale_shift_table,
                getattr(self, "audio_prompt_scale_shift_table", None),
            )  # fmt: skip

        if run_a2v or run_v2a:
            vx_normed, ax_normed = Normed(vx, self.norm_eps), Normed(ax, self.norm_eps)
            if run_a2v and not perturbations.all_in_batch(PerturbationType.SKIP_A2V_CROSS_ATTN, self.idx):
                v_scale, v_shift, gate = self._cross_modal_values(self.scale_shift_table_a2v_ca_video, video, 0)
                a_scale, a_shift, _ = self._cross_modal_values(self.scale_shift_table_a2v_ca_audio, audio, 0)
                update = self.audio_to_video_attn(
                    vx_normed.modulated(v_scale, v_shift),
                    context=ax_normed.modulated(a_scale, a_shift),
                    pe=video.cross_positional_embeddings,
                    k_pe=audio.cross_positional_embeddings,
                )
                vx = self._cross_modal_residual(vx, update, gate, perturbations, PerturbationType.SKIP_A2V_CROSS_ATTN)
            if run_v2a and not perturbations.all_in_batch(PerturbationType.SKIP_V2A_CROSS_ATTN, self.idx):
                a_scale, a_shift, gate = self._cross_modal_values(self.scale_shift_table_a2v_ca_audio, audio, 2)
                v_scale, v_shift, _ = self._cross_modal_values(self.scale_shift_table_a2v_ca_video, video, 2)
                update = self.video_to_audio_attn(
                    ax_normed.modulated(a_scale, a_shift),
                    context=vx_normed.modulated(v_scale, v_shift),
                    pe=audio.cross_positional_embeddings,
                    k_pe=video.cross_positional_embeddings,
                )
                ax = self._cross_modal_residual(ax, update, gate, perturbations, PerturbationType.SKIP_V2A_CROSS_ATTN)

        if run_video:
            vx = self._feed_forward(vx, video, self.ff, self.scale_shift_table)
        if run_audio:
            ax = self._feed_forward(ax, audio, self.audio_ff, self.audio_scale_shift_table)
        return (
            replace(video, x=vx) if video is not None else None,
            replace(audio, x=ax) if audio is not None else None,
        )

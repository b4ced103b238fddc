"""The attention shapes a DiT forward will meet, built before it runs.

MLX's CUDA backend builds a cuDNN graph the first time it meets an attention shape: 0.06-0.07 s
each on an H200, six in a two-stage run's first forward and four more in its second stage. Built
while the DiT's weights are read from disk (`Checkpoint.while_reading`), that time overlaps the
reads instead of landing in the first forwards."""

from dataclasses import dataclass

import mlx.core as mx

from LTX_2_MLX.model.transformer.attention import attend
from LTX_2_MLX.model.transformer.config import LTXModelConfig


@dataclass(frozen=True)
class AttentionShape:
    queries: int
    keys: int
    heads: int
    dim_head: int

    def build(self, dtype: mx.Dtype, batch: int = 1) -> None:
        """One attention of this shape on zeros, evaluated: its cuDNN graph is then cached."""
        width = self.heads * self.dim_head
        query, key = mx.zeros((batch, self.queries, width), dtype), mx.zeros((batch, self.keys, width), dtype)
        mx.eval(attend(query, key, key, self.heads, self.dim_head))


def attention_shapes(
    config: LTXModelConfig, video_tokens: int, audio_tokens: int | None, context_tokens: int,
    audio_context_tokens: int | None = None,
) -> list[AttentionShape]:  # fmt: skip
    """The unmasked attentions of one forward (every block has the same): each stream's self
    and text attention, and with audio the two audio<->video attentions, which use the audio
    stream's heads. Self-attention masks (keyframe conditioning) are not among them."""
    video = (config.num_attention_heads, config.attention_head_dim)
    shapes = [AttentionShape(video_tokens, video_tokens, *video), AttentionShape(video_tokens, context_tokens, *video)]
    if audio_tokens is None or not config.model_type.has_audio:
        return shapes
    audio = (config.audio_num_attention_heads, config.audio_attention_head_dim)
    audio_context_tokens = audio_context_tokens or context_tokens
    return shapes + [
        AttentionShape(audio_tokens, audio_tokens, *audio), AttentionShape(audio_tokens, audio_context_tokens, *audio),
        AttentionShape(video_tokens, audio_tokens, *audio), AttentionShape(audio_tokens, video_tokens, *audio),
    ]  # fmt: skip

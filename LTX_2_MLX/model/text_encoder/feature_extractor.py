"""Turning Gemma's hidden states (embeddings + every layer) into one feature vector per token, as
ltx-core's `feature_extractor.py`: V1 for LTX-2.0, V2 for LTX-2.3.

The reference stacks all hidden states, normalises the stack in one go and projects it: at full
size that is 49 states x 1,024 tokens x 3,840 wide, 0.77 GB in float32 for every intermediate.
Here the statistics that span tokens (V1's per-layer mean and range) are taken one hidden state
at a time, and the normalisation and the projection then run `tokens_per_chunk` tokens at a
time, each chunk evaluated before the next. Each element goes through the same operations, in
the same order, as in the stacked form; only the per-layer sums are reduced over a contiguous
(tokens, channels) slice instead of a strided one."""

import math

import mlx.core as mx
import mlx.nn as nn

# Tokens normalised and projected at once: a chunk holds about five float32 copies of its
# (tokens x all states' width) features, 0.7 MB per token at full size, ~0.4 GB for 128.
TOKENS_PER_CHUNK = 128
NORM_EPS = 1e-6

HiddenStates = list[mx.array] | mx.array  # a (B, T, D) per state, or stacked (B, T, D, L)


def num_states(hidden_states: HiddenStates) -> int:
    return len(hidden_states) if isinstance(hidden_states, list) else hidden_states.shape[-1]


def state_width(hidden_states: HiddenStates) -> int:
    return hidden_states[0].shape[-1] if isinstance(hidden_states, list) else hidden_states.shape[2]


def hidden_state(hidden_states: HiddenStates, index: int) -> mx.array:
    """(B, T, D): one layer's (or the embedding's) output."""
    return hidden_states[index] if isinstance(hidden_states, list) else hidden_states[..., index]


def stacked_tokens(hidden_states: HiddenStates, start: int, stop: int) -> mx.array:
    """(B, stop - start, D, L): tokens start..stop of every state, the layer axis last, so that
    flattening gives D·L features with the layer fastest, the order the aggregate embeds were
    trained on."""
    if isinstance(hidden_states, mx.array):
        return hidden_states[:, start:stop]
    return mx.stack([state[:, start:stop] for state in hidden_states], axis=-1)


def padding_mask_from_lengths(sequence_lengths: mx.array, length: int, padding_side: str) -> mx.array:
    token_indices = mx.arange(length)[None, :]
    if padding_side == "right":
        return token_indices < sequence_lengths[:, None]
    if padding_side == "left":
        return token_indices >= (length - sequence_lengths)[:, None]
    raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")


def masked_range_statistics(
    hidden_states: HiddenStates, valid: mx.array, sequence_lengths: mx.array
) -> tuple[mx.array, mx.array]:
    """V1's per sample and layer statistics over the valid tokens and all channels, in float32:
    (mean, max - min + eps), each (B, 1, 1, L). One state is converted to float32 at a time."""
    b = valid.shape[0]
    width = state_width(hidden_states)
    mask = valid[:, :, None]
    denominator = (sequence_lengths * width).astype(mx.float32).reshape(b, 1, 1)
    means, ranges = [], []
    for index in range(num_states(hidden_states)):
        state = hidden_state(hidden_states, index).astype(mx.float32)
        means.append(mx.where(mask, state, 0.0).sum(axis=(1, 2), keepdims=True) / (denominator + NORM_EPS))
        x_min = mx.where(mask, state, mx.inf).min(axis=(1, 2), keepdims=True)
        x_max = mx.where(mask, state, -mx.inf).max(axis=(1, 2), keepdims=True)
        ranges.append(x_max - x_min + NORM_EPS)
        mx.eval(means[-1], ranges[-1])
    return mx.stack(means, axis=-1), mx.stack(ranges, axis=-1)


def norm_and_concat_padded_batch(encoded_text: mx.array, valid: mx.array, mean: mx.array, value_range: mx.array):
    """V1 on a chunk of tokens (B, t, D, L) given the whole sequence's statistics: subtract the
    masked mean and divide by the masked range (x8); flatten to (B, t, D·L) with padding zeroed."""
    b, t, d, num_layers = encoded_text.shape
    normed = 8 * (encoded_text - mean) / value_range
    normed = normed.reshape(b, t, d * num_layers)
    return mx.where(valid[:, :, None], normed, 0.0)


def norm_and_concat_per_token_rms(encoded_text: mx.array, attention_mask: mx.array) -> mx.array:
    """V2: each token of each layer divided by its RMS over channels; flatten to (B, T, D·L)
    with padding zeroed."""
    b, t, d, num_layers = encoded_text.shape
    variance = mx.mean(encoded_text * encoded_text, axis=2, keepdims=True)
    normed = (encoded_text * mx.rsqrt(variance + NORM_EPS)).reshape(b, t, d * num_layers)
    return mx.where(attention_mask.astype(mx.bool_)[:, :, None], normed, 0.0)


def _in_chunks(project, length: int, tokens_per_chunk: int | None) -> list[mx.array]:
    """`project(start, stop)` (a tuple of arrays, or Nones) over the sequence in chunks, each
    evaluated before the next is built, concatenated along the tokens."""
    step = tokens_per_chunk or length
    pieces = []
    for start in range(0, length, step):
        outputs = project(start, min(start + step, length))
        mx.eval([output for output in outputs if output is not None])
        pieces.append(outputs)
    return [None if parts[0] is None else mx.concatenate(parts, axis=1) for parts in zip(*pieces)]


class FeatureExtractorV1(nn.Module):
    """LTX-2.0: masked range normalisation → `aggregate_embed` (no bias) → Gemma's width. The
    same features feed both the video and the audio connector."""

    def __init__(self, flat_dim: int, embedding_dim: int, is_av: bool = True):
        super().__init__()
        self.aggregate_embed = nn.Linear(flat_dim, embedding_dim, bias=False)
        self.is_av = is_av
        self.tokens_per_chunk = TOKENS_PER_CHUNK

    def __call__(self, hidden_states: HiddenStates, attention_mask: mx.array, padding_side: str = "left"):
        dtype = hidden_state(hidden_states, 0).dtype
        sequence_lengths = attention_mask.astype(mx.int32).sum(axis=-1)
        valid = padding_mask_from_lengths(sequence_lengths, attention_mask.shape[1], padding_side)
        mean, value_range = masked_range_statistics(hidden_states, valid, sequence_lengths)

        def project(start: int, stop: int) -> tuple[mx.array]:
            encoded = stacked_tokens(hidden_states, start, stop).astype(mx.float32)
            normed = norm_and_concat_padded_batch(encoded, valid[:, start:stop], mean, value_range)
            return (self.aggregate_embed(normed.astype(dtype)),)

        (features,) = _in_chunks(project, attention_mask.shape[1], self.tokens_per_chunk)
        return features, (features if self.is_av else None)


class FeatureExtractorV2(nn.Module):
    """LTX-2.3: per-token RMS norm → rescale by √(out/in) → separate video and audio aggregate
    embeds (with bias) straight to each stream's transformer width. This is the caption
    projection that LTX-2.3 moved before the connectors."""

    def __init__(self, flat_dim: int, video_dim: int, audio_dim: int | None):
        super().__init__()
        self.video_aggregate_embed = nn.Linear(flat_dim, video_dim, bias=True)
        if audio_dim is not None:
            self.audio_aggregate_embed = nn.Linear(flat_dim, audio_dim, bias=True)
        self.has_audio = audio_dim is not None
        self.tokens_per_chunk = TOKENS_PER_CHUNK

    def __call__(self, hidden_states: HiddenStates, attention_mask: mx.array, padding_side: str = "left"):
        dtype = hidden_state(hidden_states, 0).dtype
        embedding_dim = state_width(hidden_states)  # Gemma's hidden size

        def project(start: int, stop: int) -> tuple[mx.array, mx.array | None]:
            encoded = stacked_tokens(hidden_states, start, stop).astype(mx.float32)
            normed = norm_and_concat_per_token_rms(encoded, attention_mask[:, start:stop]).astype(dtype)

            def embed(linear: nn.Linear) -> mx.array:
                return linear(normed * math.sqrt(linear.weight.shape[0] / embedding_dim))

            return embed(self.video_aggregate_embed), embed(self.audio_aggregate_embed) if self.has_audio else None

        video, audio = _in_chunks(project, attention_mask.shape[1], self.tokens_per_chunk)
        return video, audio

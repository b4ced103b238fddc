"""Turning Gemma's stacked hidden states (embeddings + every layer) into one feature vector per
token, as ltx-core's `feature_extractor.py`: V1 for LTX-2.0, V2 for LTX-2.3."""

import math

import mlx.core as mx
import mlx.nn as nn


def stack_hidden_states(hidden_states: list[mx.array] | mx.array) -> mx.array:
    """(B, T, D, L): the layer axis last, so flattening gives D·L features with the layer fastest,
    the order the aggregate embeds were trained on."""
    if isinstance(hidden_states, mx.array):
        return hidden_states
    return mx.stack(hidden_states, axis=-1)


def padding_mask_from_lengths(sequence_lengths: mx.array, length: int, padding_side: str) -> mx.array:
    token_indices = mx.arange(length)[None, :]
    if padding_side == "right":
        return token_indices < sequence_lengths[:, None]
    if padding_side == "left":
        return token_indices >= (length - sequence_lengths)[:, None]
    raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")


def norm_and_concat_padded_batch(
    encoded_text: mx.array, sequence_lengths: mx.array, padding_side: str = "right"
) -> mx.array:
    """V1: per sample and layer, subtract the masked mean and divide by the masked range (×8),
    over tokens and channels; flatten to (B, T, D·L) with padding zeroed."""
    b, t, d, num_layers = encoded_text.shape
    eps = 1e-6
    mask = padding_mask_from_lengths(sequence_lengths, t, padding_side)[:, :, None, None]
    masked = mx.where(mask, encoded_text, 0.0)
    denominator = (sequence_lengths * d).astype(encoded_text.dtype).reshape(b, 1, 1, 1)
    mean = masked.sum(axis=(1, 2), keepdims=True) / (denominator + eps)
    x_min = mx.where(mask, encoded_text, mx.inf).min(axis=(1, 2), keepdims=True)
    x_max = mx.where(mask, encoded_text, -mx.inf).max(axis=(1, 2), keepdims=True)
    normed = 8 * (encoded_text - mean) / (x_max - x_min + eps)
    normed = normed.reshape(b, t, d * num_layers)
    return mx.where(mask[:, :, :, 0], normed, 0.0)


def norm_and_concat_per_token_rms(encoded_text: mx.array, attention_mask: mx.array) -> mx.array:
    """V2: each token of each layer divided by its RMS over channels; flatten to (B, T, D·L)
    with padding zeroed."""
    b, t, d, num_layers = encoded_text.shape
    variance = mx.mean(encoded_text * encoded_text, axis=2, keepdims=True)
    normed = (encoded_text * mx.rsqrt(variance + 1e-6)).reshape(b, t, d * num_layers)
    return mx.where(attention_mask.astype(mx.bool_)[:, :, None], normed, 0.0)


class FeatureExtractorV1(nn.Module):
    """LTX-2.0: masked range normalisation → `aggregate_embed` (no bias) → Gemma's width. The
    same features feed both the video and the audio connector."""

    def __init__(self, flat_dim: int, embedding_dim: int, is_av: bool = True):
        super().__init__()
        self.aggregate_embed = nn.Linear(flat_dim, embedding_dim, bias=False)
        self.is_av = is_av

    def __call__(self, hidden_states, attention_mask: mx.array, padding_side: str = "left"):
        encoded = stack_hidden_states(hidden_states)
        sequence_lengths = attention_mask.astype(mx.int32).sum(axis=-1)
        normed = norm_and_concat_padded_batch(encoded.astype(mx.float32), sequence_lengths, padding_side)
        features = self.aggregate_embed(normed.astype(encoded.dtype))
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

    def __call__(self, hidden_states, attention_mask: mx.array, padding_side: str = "left"):
        encoded = stack_hidden_states(hidden_states)
        embedding_dim = encoded.shape[2]  # Gemma's hidden size
        normed = norm_and_concat_per_token_rms(encoded.astype(mx.float32), attention_mask).astype(encoded.dtype)

        def project(linear: nn.Linear) -> mx.array:
            return linear(normed * math.sqrt(linear.weight.shape[0] / embedding_dim))

        video = project(self.video_aggregate_embed)
        audio = project(self.audio_aggregate_embed) if self.has_audio else None
        return video, audio

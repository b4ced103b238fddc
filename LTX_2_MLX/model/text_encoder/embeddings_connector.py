"""The embeddings connector (ltx-core `Embeddings1DConnector`): a small 1D transformer over the
prompt tokens, with 1D RoPE, learnable registers in place of padding, and a final RMS norm.
Weights: `model.diffusion_model.{video_,audio_,}embeddings_connector.*`."""

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.transformer.attention import Attention
from LTX_2_MLX.model.transformer.layers import FeedForward
from LTX_2_MLX.model.transformer.rope import LTXRopeType, precompute_freqs_cis

# ltx-core's Embeddings1DConnector defaults, which its configurators never override.
DEFAULT_THETA = 10000.0
DEFAULT_NUM_LEARNABLE_REGISTERS = 128
RMS_EPS = 1e-6


@dataclass
class EmbeddingsConnectorConfig:
    num_attention_heads: int
    attention_head_dim: int
    num_layers: int
    positional_embedding_max_pos: list[int]
    rope_type: LTXRopeType = LTXRopeType.INTERLEAVED
    double_precision_rope: bool = False
    apply_gated_attention: bool = False
    num_learnable_registers: int | None = DEFAULT_NUM_LEARNABLE_REGISTERS
    positional_embedding_theta: float = DEFAULT_THETA

    def __post_init__(self):
        for name in ("num_attention_heads", "attention_head_dim", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"connector {name}={getattr(self, name)!r} must be a positive integer.")
        if len(self.positional_embedding_max_pos) != 1:
            raise ValueError(
                f"connector_positional_embedding_max_pos={self.positional_embedding_max_pos} must have one entry "
                "(the connector's positions are 1D)."
            )
        self.rope_type = LTXRopeType(self.rope_type)

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_transformer_config(
        cls, transformer_config: dict, audio: bool = False, num_learnable_registers: int | None = None
    ) -> "EmbeddingsConnectorConfig":
        """As ltx-core's (Audio)Embeddings1DConnectorConfigurator: the audio connector falls back
        to the video connector's sizes when it has none of its own."""

        def size(name: str, default: int) -> int:
            video_value = transformer_config.get(f"connector_{name}", default)
            return transformer_config.get(f"audio_connector_{name}", video_value) if audio else video_value

        return cls(
            num_attention_heads=size("num_attention_heads", 30),
            attention_head_dim=size("attention_head_dim", 128),
            num_layers=size("num_layers", 2),
            positional_embedding_max_pos=list(transformer_config.get("connector_positional_embedding_max_pos", [1])),
            rope_type=LTXRopeType(transformer_config.get("rope_type", "interleaved")),
            double_precision_rope=transformer_config.get("frequencies_precision", False) == "float64",
            apply_gated_attention=transformer_config.get("connector_apply_gated_attention", False),
            num_learnable_registers=num_learnable_registers,
        )


def connector_rope(length: int, config: EmbeddingsConnectorConfig, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
    """The DiT's RoPE tables over one axis: token positions 0..length-1, no interval midpoints."""
    positions = mx.arange(length, dtype=mx.float32)[None, None, :]
    return precompute_freqs_cis(
        positions, config.inner_dim, dtype, config.positional_embedding_theta, config.positional_embedding_max_pos,
        False, config.num_attention_heads, config.rope_type, config.double_precision_rope,
    )  # fmt: skip


def rms_norm(x: mx.array) -> mx.array:
    """Weightless RMS norm (ltx-core `utils.rms_norm`)."""
    return mx.fast.rms_norm(x, None, RMS_EPS)


class BasicTransformerBlock1D(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, rope_type: LTXRopeType, apply_gated_attention: bool):
        super().__init__()
        self.attn1 = Attention(dim, None, heads, dim_head, RMS_EPS, rope_type, apply_gated_attention)
        self.ff = FeedForward(dim, dim)

    def __call__(self, x: mx.array, mask: mx.array | None, pe: tuple[mx.array, mx.array]) -> mx.array:
        x = x + self.attn1(rms_norm(x), mask=mask, pe=pe)
        return x + self.ff(rms_norm(x))


def replace_padded_with_learnable_registers(hidden_states: mx.array, valid: mx.array, registers: mx.array) -> mx.array:
    """Move each sample's valid tokens to the front (in order) and fill the rest of the sequence
    with the registers, tiled along it (register i at positions i, i + R, ...)."""
    t = hidden_states.shape[1]
    num_registers = registers.shape[0]
    if t % num_registers:
        raise ValueError(
            f"the prompt has {t} tokens, which must be a multiple of the connector's {num_registers} learnable "
            f"registers: tokenize to a max_length that is a multiple of {num_registers}, e.g. 1024."
        )
    valid = valid.astype(mx.int32)
    # Valid tokens first, each group in its original order (sort keys are unique).
    order = mx.argsort((1 - valid) * t + mx.arange(t)[None, :], axis=1)
    front = mx.take_along_axis(hidden_states, order[:, :, None], axis=1)
    count = valid.sum(axis=1, keepdims=True)
    keep = (mx.arange(t)[None, :] < count)[:, :, None]
    tiled = mx.tile(registers, (t // num_registers, 1))[None].astype(hidden_states.dtype)
    return mx.where(keep, front, tiled)


class Embeddings1DConnector(nn.Module):
    def __init__(self, config: EmbeddingsConnectorConfig):
        super().__init__()
        self.config = config
        self.transformer_1d_blocks = [
            BasicTransformerBlock1D(
                config.inner_dim,
                config.num_attention_heads,
                config.attention_head_dim,
                config.rope_type,
                config.apply_gated_attention,
            )
            for _ in range(config.num_layers)
        ]
        if config.num_learnable_registers:
            self.learnable_registers = mx.zeros((config.num_learnable_registers, config.inner_dim))

    def __call__(self, hidden_states: mx.array, attention_mask: mx.array) -> tuple[mx.array, mx.array]:
        """`attention_mask` (B, T) marks real tokens with 1. Returns the connected embeddings and
        the mask they should be attended with (all ones once registers fill the padding)."""
        valid = attention_mask.astype(mx.bool_)
        mask = valid[:, None, None, :]
        if self.config.num_learnable_registers:
            hidden_states = replace_padded_with_learnable_registers(hidden_states, valid, self.learnable_registers)
            valid = mx.ones_like(valid)
            mask = None
        pe = connector_rope(hidden_states.shape[1], self.config, hidden_states.dtype)
        for block in self.transformer_1d_blocks:
            hidden_states = block(hidden_states, mask, pe)
        return rms_norm(hidden_states), valid

"""The embeddings connector (ltx-core `Embeddings1DConnector`): a small 1D transformer over the
prompt tokens, with 1D RoPE, learnable registers in place of padding, and a final RMS norm.
Weights: `model.diffusion_model.{video_,audio_,}embeddings_connector.*`."""

import math
from dataclasses import dataclass
from enum import Enum

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# ltx-core's Embeddings1DConnector defaults, which its configurators never override.
DEFAULT_THETA = 10000.0
DEFAULT_NUM_LEARNABLE_REGISTERS = 128
RMS_EPS = 1e-6


class LTXRopeType(Enum):
    INTERLEAVED = "interleaved"
    SPLIT = "split"


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


def frequency_grid(theta: float, inner_dim: int, double_precision: bool) -> np.ndarray:
    """theta^linspace(0, 1, inner_dim/2) · π/2, float32 (ltx-core generate_freq_grid_*, one
    position axis). The float64 variant is exact; the float32 one is the correctly rounded
    value, within a few ulp of PyTorch's float32 kernels (which differ between devices anyway)."""
    count = inner_dim // 2
    exponents = np.linspace(math.log(1, theta), math.log(theta, theta), count, dtype=np.float64)
    if not double_precision:
        exponents = exponents.astype(np.float32).astype(np.float64)
    return (np.power(theta, exponents) * math.pi / 2).astype(np.float32)


def connector_rope(length: int, config: EmbeddingsConnectorConfig, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
    """cos/sin tables for positions 0..length-1: (1, length, inner_dim) for interleaved RoPE,
    (1, heads, length, head_dim/2) for split RoPE."""
    grid = frequency_grid(config.positional_embedding_theta, config.inner_dim, config.double_precision_rope)
    # float32 arithmetic in the reference's order, so the angles are the reference's angles.
    fractional = np.arange(length, dtype=np.float32) / np.float32(config.positional_embedding_max_pos[0])
    angles = grid[None, :] * (fractional[:, None] * np.float32(2) - np.float32(1))  # (T, inner_dim/2)
    cos = np.cos(angles.astype(np.float64)).astype(np.float32)
    sin = np.sin(angles.astype(np.float64)).astype(np.float32)
    if config.rope_type is LTXRopeType.INTERLEAVED:
        cos, sin = np.repeat(cos, 2, axis=-1)[None], np.repeat(sin, 2, axis=-1)[None]
    else:
        heads = config.num_attention_heads
        cos = cos.reshape(1, length, heads, -1).transpose(0, 2, 1, 3)
        sin = sin.reshape(1, length, heads, -1).transpose(0, 2, 1, 3)
    return mx.array(cos).astype(dtype), mx.array(sin).astype(dtype)


def apply_interleaved_rotary_emb(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """x (B, T, inner_dim): channel pairs (2i, 2i+1) rotated."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + rotated * sin


def apply_split_rotary_emb(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """x (B, T, heads·head_dim): within each head, the first half rotated against the second."""
    b, t, _ = x.shape
    heads = cos.shape[1]
    x = x.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    out = mx.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return out.transpose(0, 2, 1, 3).reshape(b, t, -1)


class Attention(nn.Module):
    """ltx-core's transformer `Attention`, self-attention only: q/k RMS norms over the whole
    inner width, RoPE on q and k, optional per-head gate 2·sigmoid(logits)."""

    def __init__(self, dim: int, heads: int, dim_head: int, rope_type: LTXRopeType, apply_gated_attention: bool):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads, self.dim_head, self.rope_type = heads, dim_head, rope_type
        self.q_norm = nn.RMSNorm(inner_dim, eps=RMS_EPS)
        self.k_norm = nn.RMSNorm(inner_dim, eps=RMS_EPS)
        self.to_q = nn.Linear(dim, inner_dim)
        self.to_k = nn.Linear(dim, inner_dim)
        self.to_v = nn.Linear(dim, inner_dim)
        if apply_gated_attention:
            self.to_gate_logits = nn.Linear(dim, heads)
        self.apply_gated_attention = apply_gated_attention
        self.to_out = [nn.Linear(inner_dim, dim)]

    def __call__(self, x: mx.array, mask: mx.array | None, pe: tuple[mx.array, mx.array]) -> mx.array:
        b, t, _ = x.shape
        q, k, v = self.q_norm(self.to_q(x)), self.k_norm(self.to_k(x)), self.to_v(x)
        rope = apply_interleaved_rotary_emb if self.rope_type is LTXRopeType.INTERLEAVED else apply_split_rotary_emb
        q, k = rope(q, *pe), rope(k, *pe)
        q, k, v = (y.reshape(b, t, self.heads, self.dim_head).transpose(0, 2, 1, 3) for y in (q, k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5, mask=mask)
        out = out.transpose(0, 2, 1, 3)  # (B, T, H, D)
        if self.apply_gated_attention:
            out = out * (2.0 * mx.sigmoid(self.to_gate_logits(x)))[..., None]
        return self.to_out[0](out.reshape(b, t, -1))


class GELUApprox(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def __call__(self, x: mx.array) -> mx.array:
        return nn.gelu_approx(self.proj(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # Indices as in ltx-core's nn.Sequential(GELUApprox, Identity, Linear): keys net.0 / net.2.
        self.net = [GELUApprox(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)]

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.net:
            x = layer(x)
        return x


def rms_norm(x: mx.array) -> mx.array:
    """Weightless RMS norm (ltx-core `utils.rms_norm`)."""
    return mx.fast.rms_norm(x, None, RMS_EPS)


class BasicTransformerBlock1D(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, rope_type: LTXRopeType, apply_gated_attention: bool):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head, rope_type, apply_gated_attention)
        self.ff = FeedForward(dim)

    def __call__(self, x: mx.array, mask: mx.array | None, pe: tuple[mx.array, mx.array]) -> mx.array:
        x = x + self.attn1(rms_norm(x), mask, pe)
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

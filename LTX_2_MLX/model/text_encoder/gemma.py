"""The language model of Gemma 3 (the text half of Gemma3ForConditionalGeneration), written to
return every layer's hidden state as LTX-2's feature extractor needs them.

Layer for layer this follows transformers' `Gemma3TextModel`: scaled token embeddings, decoder
layers that alternate sliding-window ("local") and full ("global") causal attention with their
own RoPE bases, q/k RMS norms, four (1 + w)-scaled RMS norms per layer and a GeGLU MLP.
"""

import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.common.one_ahead import OneAhead

# transformers' Gemma3TextConfig defaults: the official config.json leaves these out.
_TEXT_CONFIG_DEFAULTS = {
    "vocab_size": 262_208,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "attention_bias": False,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "layer_types": None,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "use_bidirectional_attention": False,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 1,
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


@dataclass
class Gemma3TextConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float  # RoPE base of the global ("full_attention") layers
    rope_local_base_freq: float  # RoPE base of the local ("sliding_attention") layers
    rope_scaling_factor: float  # linear scaling of the global RoPE positions (1 = none)
    query_pre_attn_scalar: float
    sliding_window: int
    layer_types: list[str]
    attention_bias: bool = False
    final_logit_softcapping: float | None = None
    eos_token_ids: list[int] = field(default_factory=lambda: [1])
    rope_local_scaling_factor: float = 1.0  # linear scaling of the local RoPE positions (Gemma 3: none)

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} in the Gemma config.json."
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries, num_hidden_layers={self.num_hidden_layers}: "
                "fix the Gemma config.json."
            )
        unknown = sorted(set(self.layer_types) - {"sliding_attention", "full_attention"})
        if unknown:
            raise ValueError(f"unknown Gemma layer_types {unknown}: expected sliding_attention or full_attention.")

    @classmethod
    def from_dict(cls, config: dict, where: str = "config.json") -> "Gemma3TextConfig":
        """From a Hugging Face config.json: a multimodal `gemma3` one (its `text_config`) or a
        text-only `gemma3_text` one."""
        text = config.get("text_config", config)
        missing = [key for key in _REQUIRED if key not in text]
        if missing:
            raise ValueError(
                f"{where}: the Gemma 3 text config lacks {missing}. "
                "Point --gemma-path at a Gemma 3 model directory (e.g. google/gemma-3-12b-it)."
            )
        values = {**_TEXT_CONFIG_DEFAULTS, **text}
        if values["attn_logit_softcapping"] is not None:
            raise ValueError(f"{where}: attn_logit_softcapping is not supported (Gemma 3 does not use it).")
        if values["use_bidirectional_attention"]:
            raise ValueError(f"{where}: use_bidirectional_attention=true is not supported; Gemma 3 is causal.")
        if values["hidden_activation"] != "gelu_pytorch_tanh":
            raise ValueError(f"{where}: hidden_activation={values['hidden_activation']!r}, expected gelu_pytorch_tanh.")
        rope = read_rope_settings(values, where)
        layer_types = values["layer_types"] or [
            "sliding_attention" if (i + 1) % values["sliding_window_pattern"] else "full_attention"
            for i in range(values["num_hidden_layers"])
        ]
        eos = config.get("eos_token_id", values["eos_token_id"])
        return cls(
            hidden_size=values["hidden_size"],
            intermediate_size=values["intermediate_size"],
            num_hidden_layers=values["num_hidden_layers"],
            num_attention_heads=values["num_attention_heads"],
            num_key_value_heads=values["num_key_value_heads"],
            head_dim=values["head_dim"],
            vocab_size=values["vocab_size"],
            rms_norm_eps=values["rms_norm_eps"],
            rope_theta=rope["full_attention"][0],
            rope_local_base_freq=rope["sliding_attention"][0],
            rope_scaling_factor=rope["full_attention"][1],
            rope_local_scaling_factor=rope["sliding_attention"][1],
            query_pre_attn_scalar=values["query_pre_attn_scalar"],
            sliding_window=values["sliding_window"],
            layer_types=list(layer_types),
            attention_bias=values["attention_bias"],
            final_logit_softcapping=values["final_logit_softcapping"],
            eos_token_ids=list(eos) if isinstance(eos, list) else [eos],
        )


_ROPE_LAYER_TYPES = ("full_attention", "sliding_attention")
_ROPE_KEYS = {"rope_type", "type", "factor", "rope_theta"}
_GEMMA_ROPE = 'Gemma 3 has {"rope_type": "linear", "factor": 8.0} on full_attention, "default" on sliding_attention'


def _is_positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _read_rope_entry(entry, name: str, base_key: str, base, where: str) -> tuple[float, float]:
    """(base, linear factor) of one RoPE dict `name`: a `rope_scaling`, a flat `rope_parameters`
    or one per-layer-type entry of it. Its own rope_theta wins over `base` (from the top-level
    `base_key`), as in transformers 5."""
    entry = {} if entry is None else entry
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: {name} must be a JSON object, got {entry!r}. {_GEMMA_ROPE}.")
    unread = sorted(set(entry) - _ROPE_KEYS)
    if unread:
        raise ValueError(f"{where}: {name} has {unread}, which Gemma 3 does not use: delete them. {_GEMMA_ROPE}.")
    if "rope_theta" in entry:
        base_key, base = f"{name}['rope_theta']", entry["rope_theta"]
    if not _is_positive_number(base):
        raise ValueError(f"{where}: {base_key}={base!r}; set a positive base (Gemma 3: 1000000 global, 10000 local).")
    rope_type = entry.get("rope_type", entry.get("type", "default"))
    if rope_type == "default":
        return float(base), 1.0
    if rope_type != "linear":
        raise ValueError(f"{where}: {name} has rope_type {rope_type!r}, which is not implemented. {_GEMMA_ROPE}.")
    factor = entry.get("factor")
    if not _is_positive_number(factor):
        raise ValueError(f"{where}: {name} is rope_type 'linear' with factor={factor!r}: set a number (Gemma 3: 8.0).")
    return float(base), float(factor)


def read_rope_settings(text_config: dict, where: str) -> dict[str, tuple[float, float]]:
    """(base, linear factor) of RoPE on the global ("full_attention") and local
    ("sliding_attention") layers, from either way transformers writes them.

    transformers 4: `rope_scaling` (the global layers' scaling) beside `rope_theta` (global base)
    and `rope_local_base_freq` (local base). transformers 5 (Gemma3TextConfig's
    convert_rope_params_to_dict): `rope_parameters` with one entry per layer type, each holding
    its rope_theta; a missing entry is default RoPE on the old keys' base. A flat
    `rope_parameters` is read as `rope_scaling`, which transformers 5 made an alias of it.
    Anything else, or old and new keys that disagree, is refused rather than guessed.
    """
    bases = {"full_attention": "rope_theta", "sliding_attention": "rope_local_base_freq"}

    def entry(value, name: str, layer_type: str) -> tuple[float, float]:
        return _read_rope_entry(value, name, bases[layer_type], text_config[bases[layer_type]], where)

    legacy = {
        "full_attention": entry(text_config.get("rope_scaling"), "rope_scaling", "full_attention"),
        "sliding_attention": entry(None, "rope_local_base_freq", "sliding_attention"),
    }
    parameters = text_config.get("rope_parameters")
    if parameters is None:
        return legacy
    if not isinstance(parameters, dict):
        raise ValueError(f"{where}: rope_parameters must be a JSON object, got {parameters!r}. {_GEMMA_ROPE}.")
    if any(key in _ROPE_LAYER_TYPES for key in parameters):
        flat = sorted(set(parameters) - set(_ROPE_LAYER_TYPES))
        if flat:
            raise ValueError(
                f"{where}: rope_parameters mixes per-layer-type entries with top-level keys {flat}: move those "
                "into rope_parameters['full_attention'] or delete them, so that one form remains."
            )
        settings = {
            layer_type: entry(parameters.get(layer_type), f"rope_parameters['{layer_type}']", layer_type)
            for layer_type in _ROPE_LAYER_TYPES
        }
    else:
        settings = {
            "full_attention": entry(parameters, "rope_parameters", "full_attention"),
            "sliding_attention": legacy["sliding_attention"],
        }
    if text_config.get("rope_scaling") is not None and settings["full_attention"] != legacy["full_attention"]:
        (old_base, old_factor), (new_base, new_factor) = legacy["full_attention"], settings["full_attention"]
        raise ValueError(
            f"{where}: for the global layers rope_scaling/rope_theta say base {old_base:g}, factor {old_factor:g} but "
            f"rope_parameters says base {new_base:g}, factor {new_factor:g}: delete the stale rope_scaling."
        )
    return settings


def rope_inverse_frequencies(head_dim: int, base: float, scaling_factor: float = 1.0) -> mx.array:
    """1 / base^(2i/d), divided by the linear scaling factor, computed in float32 like the reference."""
    exponents = mx.arange(0, head_dim, 2).astype(mx.float32) / head_dim
    return (1.0 / mx.power(mx.array(base, mx.float32), exponents)) / scaling_factor


def rope_cos_sin(inverse_frequencies: mx.array, positions: mx.array) -> tuple[mx.array, mx.array]:
    """cos/sin tables (B, 1, T, head_dim) for rotate-half RoPE at integer `positions` (B, T)."""
    angles = positions.astype(mx.float32)[..., None] * inverse_frequencies
    angles = mx.concatenate([angles, angles], axis=-1)[:, None]
    return mx.cos(angles), mx.sin(angles)


def apply_rotate_half_rope(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    half = x.shape[-1] // 2
    rotated = mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(x.dtype)


def causal_attention_mask(
    query_positions: mx.array,
    key_positions: mx.array,
    key_valid: mx.array,
    sliding_window: int | None,
    image_groups: mx.array | None = None,
) -> mx.array:
    """Boolean (B, 1, Tq, Tk): key is not after the query, not padding, and (for local layers)
    among the `sliding_window` most recent positions, the query's own included. Tokens of one
    image (`image_groups`, -1 for text; queries and keys the same positions) also see each
    other both ways, as transformers' Gemma3Model lets them."""
    q = query_positions[:, None, :, None]
    k = key_positions[:, None, None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed = allowed & (k > q - sliding_window)
    if image_groups is not None:
        same_image = (image_groups[:, None, :, None] == image_groups[:, None, None, :]) & (
            image_groups[:, None, :, None] >= 0
        )
        allowed = allowed | same_image
    return allowed & key_valid[:, None, None, :]


class RMSNorm(nn.Module):
    """Gemma's RMS norm: the stored weight is an offset, the scale is (1 + weight)."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        # In float32 like the reference: 1 + w in bfloat16 would round small offsets away.
        scale = 1.0 + self.weight.astype(mx.float32)
        return mx.fast.rms_norm(x.astype(mx.float32), scale, self.eps).astype(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: Gemma3TextConfig, layer_index: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar**-0.5
        self.is_sliding = config.layer_types[layer_index] == "sliding_attention"
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def __call__(self, x, cos, sin, mask, has_key, cache: "KVCache | None" = None, layer_index: int = 0):
        b, t, _ = x.shape
        queries = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        keys = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        values = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        queries = apply_rotate_half_rope(self.q_norm(queries), cos, sin)
        keys = apply_rotate_half_rope(self.k_norm(keys), cos, sin)
        if cache is not None:
            keys, values = cache.update(layer_index, keys, values)
        out = mx.fast.scaled_dot_product_attention(queries, keys, values, scale=self.scale, mask=mask)
        if has_key is not None:
            out = out * has_key.astype(out.dtype)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.gelu_approx(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3TextConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.self_attn = Attention(config, layer_index)
        self.mlp = MLP(config)
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)

    def __call__(self, x, cos, sin, mask, has_key=None, cache=None):
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, has_key, cache, self.layer_index)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h)


class KVCache:
    """Keys and values of every layer seen so far, for one generation (batch of one).

    The whole history is kept for local layers too; their window is enforced by the mask.
    """

    def __init__(self, num_layers: int):
        self.keys: list[mx.array | None] = [None] * num_layers
        self.values: list[mx.array | None] = [None] * num_layers
        self.length = 0

    def update(self, layer_index: int, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys[layer_index] is not None:
            keys = mx.concatenate([self.keys[layer_index], keys], axis=2)
            values = mx.concatenate([self.values[layer_index], values], axis=2)
        self.keys[layer_index], self.values[layer_index] = keys, values
        return keys, values


@dataclass
class _Sequence:
    """One input's state on its way through the layers."""

    hidden: mx.array
    masks: dict  # attention mask per sliding window (None: global)
    has_key: dict  # per window, whether a query row may attend to anything
    rope: dict  # (cos, sin) per `is_sliding`
    states: list[mx.array] | None  # every hidden state so far, when asked for
    rope_as: dict = field(default_factory=dict)  # (cos, sin) per (`is_sliding`, dtype), cast once

    def rope_in(self, sliding: bool, dtype: mx.Dtype) -> tuple[mx.array, mx.array]:
        """The RoPE tables in the hidden states' dtype, cast once per pass rather than per layer."""
        if (sliding, dtype) not in self.rope_as:
            self.rope_as[sliding, dtype] = tuple(table.astype(dtype) for table in self.rope[sliding])
        return self.rope_as[sliding, dtype]


class Gemma3TextModel(nn.Module):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = [DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        # Layers per evaluation (None: the whole forward as one graph). Bounded pieces of GPU
        # work keep macOS's watchdog quiet; streamed layers (loader.streaming) need 1.
        self.eval_layers: int | None = None
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self._global_inverse_frequencies = rope_inverse_frequencies(
            config.head_dim, config.rope_theta, config.rope_scaling_factor
        )
        self._local_inverse_frequencies = rope_inverse_frequencies(
            config.head_dim, config.rope_local_base_freq, config.rope_local_scaling_factor
        )

    def embed(self, input_ids: mx.array) -> mx.array:
        embeddings = self.embed_tokens(input_ids)
        # The reference casts √hidden to the weights' dtype before scaling (62.0 in bfloat16 for 3840).
        return embeddings * mx.array(math.sqrt(self.config.hidden_size), mx.float32).astype(embeddings.dtype)

    def __call__(
        self,
        input_ids: mx.array,
        attention_mask: mx.array | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = True,
        input_embeddings: mx.array | None = None,
        image_groups: mx.array | None = None,
    ) -> tuple[mx.array, list[mx.array]]:
        """The final (normed) hidden state and, if asked, the list of all hidden states:
        embeddings, the output of each layer but the last, and the normed last one (as
        transformers' `output_hidden_states=True` returns them).

        Positions count from 0 at the first column (padding included), as in the reference.
        `attention_mask` (B, T) marks real tokens with 1; it is not combined with `cache`.
        `input_embeddings` replaces the token embeddings (image features merged in), and
        `image_groups` (B, T) numbers each image's tokens (-1 for text) for their
        bidirectional attention; both only for a first (uncached) pass.
        """
        sequence = self._begin(input_ids, attention_mask, cache, output_hidden_states, input_embeddings, image_groups)
        self._run_layers([sequence], cache)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self._finish(sequence)

    def hidden_states_of(self, inputs: list[tuple[mx.array, mx.array]]) -> list[list[mx.array]]:
        """Every hidden state (as `__call__` returns them) of each (input_ids, attention_mask),
        in one pass over the layers: each layer runs on every sequence before the next layer,
        so streamed layers are read once for all the prompts. Each sequence is computed on its
        own, exactly as a `__call__` of it alone."""
        sequences = [self._begin(ids, mask, None, True, None, None) for ids, mask in inputs]
        self._run_layers(sequences, None)
        return [self._finish(sequence)[1] for sequence in sequences]

    def _begin(self, input_ids, attention_mask, cache, output_hidden_states, input_embeddings, image_groups):
        """One sequence's masks, RoPE tables and embeddings, before the first layer."""
        b, t = input_ids.shape
        offset = cache.length if cache is not None else 0
        if attention_mask is not None and cache is not None:
            raise ValueError("attention_mask with a KV cache is not supported: generate one unpadded prompt at a time.")
        positions = mx.broadcast_to(mx.arange(offset, offset + t)[None], (b, t))
        key_positions = mx.broadcast_to(mx.arange(0, offset + t)[None], (b, offset + t))
        key_valid = (
            attention_mask.astype(mx.bool_) if attention_mask is not None else mx.ones((b, offset + t), dtype=mx.bool_)
        )
        if image_groups is not None and offset:
            raise ValueError("image_groups are only supported on the first pass over a prompt.")
        masks = {
            window: causal_attention_mask(positions, key_positions, key_valid, window, image_groups)
            for window in (None, self.config.sliding_window)
        }
        # A query that may attend to nothing (a left-padding position) gets a zero output, as
        # PyTorch's SDPA gives it; MLX would give NaN, so such rows are rerouted then zeroed.
        has_key = {window: mask.any(axis=-1, keepdims=True) for window, mask in masks.items()}
        masks = {window: mask | ~has_key[window] for window, mask in masks.items()}
        hidden = self.embed(input_ids) if input_embeddings is None else input_embeddings
        rope = {
            False: rope_cos_sin(self._global_inverse_frequencies, positions),
            True: rope_cos_sin(self._local_inverse_frequencies, positions),
        }
        return _Sequence(hidden, masks, has_key, rope, [hidden] if output_hidden_states else None)

    def _run_layers(self, sequences: list[_Sequence], cache: KVCache | None) -> None:
        pieces = OneAhead()
        for index, layer in enumerate(self.layers):
            window = self.config.sliding_window if layer.self_attn.is_sliding else None
            for sequence in sequences:
                cos, sin = sequence.rope_in(layer.self_attn.is_sliding, sequence.hidden.dtype)
                sequence.hidden = layer(sequence.hidden, cos, sin, sequence.masks[window], sequence.has_key[window],
                                        cache)  # fmt: skip
                if sequence.states is not None:
                    sequence.states.append(sequence.hidden)
            if self.eval_layers and (index + 1) % self.eval_layers == 0:
                pieces.queue([sequence.hidden for sequence in sequences])

    def _finish(self, sequence: _Sequence) -> tuple[mx.array, list[mx.array]]:
        hidden = self.norm(sequence.hidden)
        if sequence.states is None:
            return hidden, []
        sequence.states[-1] = hidden
        return hidden, sequence.states

    def logits(self, hidden: mx.array) -> mx.array:
        """The LM head: the embedding matrix, tied, as Gemma 3 ties it."""
        logits = self.embed_tokens.as_linear(hidden)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = mx.tanh(logits / cap) * cap
        return logits


# Where the language model lives in the checkpoints Hugging Face writes: the multimodal model
# (older and newer transformers layouts) and a text-only Gemma3ForCausalLM.
LANGUAGE_MODEL_PREFIXES = ("language_model.model.", "model.language_model.", "model.")


def language_model_prefix(keys) -> str | None:
    keys = set(keys)
    for prefix in LANGUAGE_MODEL_PREFIXES:
        if prefix + "embed_tokens.weight" in keys:
            return prefix
    return None


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Hugging Face Gemma 3 tensors → this module's keys: only the language model is kept (the
    vision tower, projector and the tied lm_head copy are dropped)."""
    prefix = language_model_prefix(weights)
    if prefix is None:
        return {}
    return {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}

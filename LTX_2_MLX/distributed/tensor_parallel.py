"""Tensor-parallel DiT: every process holds 1/N of each transformer block's attention and
feed-forward weights, as mlx-lm's models shard theirs.

In each attention the query, key, value (and LTX-2.3 gate) projections are split by output,
so a process owns heads/N whole heads, and the output projection by input, its partial
products summed over the group (`all_sum`). In each feed-forward the first layer is split by
output and the second by input. The q/k RMS norms span all heads, so their mean square is
summed over the group too; the RoPE tables are cut to the process's heads. Everything else
(patchify, AdaLN, caption projection, output head: ~1% of the 19B) is replicated.

The model files are not changed: the layers are replaced from outside, in two steps so that
quantization can run in between on the process's slice alone:
`split_transformer` cuts the weights in place (layers stay Linear, QuantizedLinear or
Fp8Linear, and may still be lazily loaded), then `connect_transformer` turns the cut layers
into MLX's distributed layers (`AllToShardedLinear`, `ShardedToAllLinear` and their
Quantized* forms). `shard_transformer` does both.
"""

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.layers.distributed import (
    AllToShardedLinear,
    QuantizedAllToShardedLinear,
    QuantizedShardedToAllLinear,
    ShardedToAllLinear,
    shard_inplace,
)

from LTX_2_MLX.distributed.launch import ParallelError
from LTX_2_MLX.quantization import Fp8Linear

ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
FEED_FORWARDS = ("ff", "audio_ff")
# Per attention: split by output (a process computes its heads) / by input (partial sums).
_ATTENTION_COLUMNS = ("to_q", "to_k", "to_v", "to_gate_logits")


class ShardedRMSNorm(nn.Module):
    """RMS norm over features split across the group: the sum of squares is all-summed, so
    each process normalises its slice by the full vector's root mean square."""

    def __init__(self, weight: mx.array, eps: float, full_dims: int, group: mx.distributed.Group):
        super().__init__()
        self.weight = weight
        self.eps = eps
        self.full_dims = full_dims
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        x32 = x.astype(mx.float32)
        squares = mx.distributed.all_sum(mx.sum(mx.square(x32), axis=-1, keepdims=True), group=self.group)
        normed = (x32 * mx.rsqrt(squares / self.full_dims + self.eps)).astype(x.dtype)
        return normed * self.weight.astype(x.dtype)


class HeadShardedAttention(nn.Module):
    """An Attention holding heads/N heads: cuts the RoPE tables (computed for all heads) to its
    own before calling it. SPLIT tables are (B, T, heads, d/2), INTERLEAVED ones (B, T, H*D)."""

    def __init__(self, attention: nn.Module, rank: int, size: int):
        super().__init__()
        self.attention = attention
        self.rank = rank
        self.size = size

    def _own_heads(self, table: tuple[mx.array, mx.array] | None) -> tuple[mx.array, mx.array] | None:
        if table is None:
            return None
        axis = 2 if table[0].ndim == 4 else table[0].ndim - 1
        width = table[0].shape[axis] // self.size
        index = [slice(None)] * table[0].ndim
        index[axis] = slice(self.rank * width, (self.rank + 1) * width)
        return tuple(t[tuple(index)] for t in table)

    def __call__(self, x: mx.array, *args, pe=None, k_pe=None, **kwargs) -> mx.array:
        return self.attention(x, *args, pe=self._own_heads(pe), k_pe=self._own_heads(k_pe), **kwargs)


class Fp8ShardedToAllLinear(Fp8Linear):
    """An fp8 Linear split by input: partial products all-summed, then the bias added once.
    (Split by output, an Fp8Linear needs no communication and stays as it is.)"""

    def __init__(self, input_dims: int, output_dims: int, bias: bool, scaled: bool, group: mx.distributed.Group):
        super().__init__(input_dims, output_dims, bias, scaled)
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        out = x @ mx.from_fp8(self.weight, dtype=x.dtype).T
        if "weight_scale" in self:
            out = out * self.weight_scale.astype(x.dtype)
        out = mx.distributed.all_sum(out, group=self.group)
        if "bias" in self:
            bias = self.bias
            out = out + (mx.from_fp8(bias, dtype=x.dtype) if bias.dtype == mx.uint8 else bias.astype(x.dtype))
        return out


def check_tensor_parallel(model: nn.Module, size: int) -> None:
    """Refuse a model whose heads (or quantization groups) do not divide evenly over `size`."""
    for index, block in enumerate(model.transformer_blocks):
        for name in ATTENTIONS:
            if name in block and block[name].heads % size:
                raise ParallelError(
                    f"transformer_blocks.{index}.{name} has {block[name].heads} heads, which do not split over "
                    f"{size} processes: launch a number of processes that divides it"
                )
    for path, layer in _row_layers(model):
        groups = layer["scales"].shape[-1] if "scales" in layer else layer.weight.shape[-1]
        if groups % size:
            raise ParallelError(
                f"{path} cannot be split by input over {size} processes ({layer.weight.shape[-1]} columns"
                + (f" in {groups} quantization groups" if "scales" in layer else "")
                + "): launch 2 or 4 processes"
            )


def _row_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = []
    for index, block in enumerate(model.transformer_blocks):
        for name in ATTENTIONS:
            if name in block:
                attention = block[name]
                attention = attention.attention if isinstance(attention, HeadShardedAttention) else attention
                layers.append((f"transformer_blocks.{index}.{name}.to_out.0", attention.to_out[0]))
        for name in FEED_FORWARDS:
            if name in block:
                layers.append((f"transformer_blocks.{index}.{name}.net.2", block[name].net[2]))
    return layers


def _by_output(path: str, value: mx.array) -> int | None:
    return 0 if value.ndim >= 1 else None  # weight, scales, biases rows and the bias; not a scalar scale


def _by_input(path: str, value: mx.array) -> int | None:
    return -1 if value.ndim == 2 else None  # weight, scales, biases columns; the bias stays whole


def split_transformer(model: nn.Module, group: mx.distributed.Group) -> nn.Module:
    """Cut an LTXModel's block weights to this process's share, in place (lazily where the
    weights are lazy): see the module docstring. Returns the model."""
    size, rank = group.size(), group.rank()
    check_tensor_parallel(model, size)
    for block in model.transformer_blocks:
        for name in ATTENTIONS:
            if name not in block:
                continue
            attention = block[name]
            for column in _ATTENTION_COLUMNS:
                if column in attention:
                    shard_inplace(attention[column], _by_output, group=group)
            shard_inplace(attention.to_out[0], _by_input, group=group)
            for norm in ("q_norm", "k_norm"):
                full = attention[norm].weight
                share = full.shape[0] // size
                attention[norm] = ShardedRMSNorm(full[rank * share : (rank + 1) * share], attention[norm].eps,
                                                 full.shape[0], group)  # fmt: skip
            attention.heads //= size
            block[name] = HeadShardedAttention(attention, rank, size)
        for name in FEED_FORWARDS:
            if name in block:
                shard_inplace(block[name].net[0].proj, _by_output, group=group)
                shard_inplace(block[name].net[2], _by_input, group=group)
    model.tensor_parallel_size = size
    return model


def _connected(layer: nn.Module, by_output: bool, group: mx.distributed.Group) -> nn.Module:
    """The MLX distributed layer computing what the cut `layer` computes, with its weights."""
    size = group.size()
    if isinstance(layer, Fp8Linear):
        if by_output:
            return layer
        output_dims, input_dims = layer.weight.shape
        connected = Fp8ShardedToAllLinear(input_dims, output_dims, "bias" in layer, "weight_scale" in layer, group)
    elif isinstance(layer, nn.QuantizedLinear):
        output_dims, input_dims = layer.weight.shape[0], layer.weight.shape[1] * 32 // layer.bits
        full = (input_dims, output_dims * size) if by_output else (input_dims * size, output_dims)
        cls = QuantizedAllToShardedLinear if by_output else QuantizedShardedToAllLinear
        connected = cls(*full, "bias" in layer, layer.group_size, layer.bits, layer.mode, group=group)
    elif isinstance(layer, nn.Linear):
        output_dims, input_dims = layer.weight.shape
        full = (input_dims, output_dims * size) if by_output else (input_dims * size, output_dims)
        connected = (AllToShardedLinear if by_output else ShardedToAllLinear)(*full, "bias" in layer, group=group)
    else:
        raise TypeError(f"cannot connect a {type(layer).__name__} for tensor parallelism")
    # The constructors' random weights are lazy and replaced here before anything evaluates them.
    connected.update(layer.parameters())
    return connected


def connect_transformer(model: nn.Module, group: mx.distributed.Group) -> nn.Module:
    """Turn the layers `split_transformer` cut into MLX's distributed layers. Returns the model."""
    for block in model.transformer_blocks:
        for name in ATTENTIONS:
            if name not in block:
                continue
            attention = block[name].attention
            for column in _ATTENTION_COLUMNS:
                if column in attention:
                    attention[column] = _connected(attention[column], True, group)
            attention.to_out[0] = _connected(attention.to_out[0], False, group)
        for name in FEED_FORWARDS:
            if name in block:
                block[name].net[0].proj = _connected(block[name].net[0].proj, True, group)
                block[name].net[2] = _connected(block[name].net[2], False, group)
    return model


def shard_transformer(model: nn.Module, group: mx.distributed.Group) -> nn.Module:
    """Split and connect a loaded (possibly quantized) LTXModel in place; returns it."""
    return connect_transformer(split_transformer(model, group), group)


def load_sharded_transformer(
    checkpoint, dtype: mx.Dtype, loras: list[tuple[str, float]], quantization: str | None,
    group: mx.distributed.Group,
) -> nn.Module:  # fmt: skip
    """This process's share of the checkpoint's DiT, LoRAs fused and quantized as asked.

    From a float file without LoRAs the weights stay lazy until cut, so a process reads and
    keeps only its share (plus one whole tensor at a time) and quantizes that share alone.
    LoRAs are fused into the whole weights first, and fp8 or quantized files load as stored,
    whole: then each process holds the full model for a moment before cutting it.
    """
    from LTX_2_MLX.loader.checkpoint import Checkpoint, evaluate_parameters, load_module_weights
    from LTX_2_MLX.loader.transformer import (
        CONNECTOR_PREFIXES,
        TRANSFORMER_PREFIX,
        stored_quantization,
        transformer_config,
    )
    from LTX_2_MLX.model.transformer import LTXModel
    from LTX_2_MLX.quantization import load_prepared_transformer, prepare_transformer

    checkpoint = Checkpoint.open(checkpoint)
    if stored_quantization(checkpoint) is None and not loras:
        # loader.load_transformer's steps without its evaluation: the weights stay lazy until cut.
        model = LTXModel(transformer_config(checkpoint))
        tensors = checkpoint.load(TRANSFORMER_PREFIX)
        weights = {key: value for key, value in tensors.items() if not key.startswith(CONNECTOR_PREFIXES)}
        load_module_weights(model, weights, checkpoint.path, "transformer", dtype=dtype)
        del tensors, weights
        split_transformer(model, group)
        prepare_transformer(model, [], quantization)
    else:
        model = load_prepared_transformer(checkpoint, dtype, loras, quantization)
        split_transformer(model, group)
    connect_transformer(model, group)
    evaluate_parameters(model, "loading this process's share of the transformer")
    model.eval()
    return model

"""The DiT with its transformer blocks streamed from the checkpoint (`ModelLedger(low_memory=True)`):
everything outside the blocks resident, each block read, converted as the file stores it,
LoRA-fused and quantized as it is about to run (loader.streaming.StreamedBlocks).

Each step is the resident path's (load_transformer_as_stored, then prepare_transformer: fp8
cast, LoRAs, int8/int4) applied to one block's arrays, so the streamed model computes with
bitwise the same weights. The price is paid every forward: the block bytes are read again
and LoRAs and on-the-fly quantization recomputed; a file quantized ahead (`ltx2-mlx quantize`)
streams with no conversion at all.
"""

from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from LTX_2_MLX.loader.checkpoint import Checkpoint, block_tensors
from LTX_2_MLX.loader.lora import _weight_shapes, fuse_lora_pairs, fused_weight, lora_layers, refuse_affine_targets
from LTX_2_MLX.loader.streaming import BlockReader, StreamedBlocks, quantize_weights, quantized_paths
from LTX_2_MLX.loader.transformer import TRANSFORMER_PREFIX, stored_quantization
from LTX_2_MLX.model.common.fp8_linear import Fp8Linear
from LTX_2_MLX.model.transformer import LTXModel, LTXModelType
from LTX_2_MLX.quantization.checkpoint import fp8_module_weights, load_transformer_as_stored
from LTX_2_MLX.quantization.quantize import QuantizationSpec, dequantized_linear, quantize_block, refuse_quantized

BLOCKS = "transformer_blocks."


def _fuse(weights: dict[str, mx.array], path: str, pairs, fp8: bool) -> None:
    scale_key = f"{path}.weight_scale"
    weight, scale = fused_weight(weights[f"{path}.weight"], pairs, fp8, weights.get(scale_key) if fp8 else None)
    weights[f"{path}.weight"] = weight
    if scale is not None:
        weights[scale_key] = scale


def _dequantized(weights: dict[str, mx.array], path: str, dtype: mx.Dtype) -> dict[str, mx.array]:
    """An fp8 layer's weight (and bias) as `dtype`, its scale applied and removed from `weights`."""
    layer = Fp8Linear(*reversed(weights[f"{path}.weight"].shape), bias=f"{path}.bias" in weights,
                      scaled=f"{path}.weight_scale" in weights)  # fmt: skip
    names = [name for name in ("weight", "bias", "weight_scale") if f"{path}.{name}" in weights]
    layer.load_weights([(name, weights.pop(f"{path}.{name}")) for name in names])
    linear = dequantized_linear(layer, dtype)
    return {f"{path}.{name}": value for name, value in tree_flatten(linear.parameters())}


def load_streamed_transformer(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype = mx.bfloat16,
    loras: Sequence[tuple[str | Path | Checkpoint, float]] = (),
    quantization: str | None = None,
    model_type: LTXModelType | None = None,
) -> LTXModel:
    """The DiT as `load_transformer_as_stored` + `prepare_transformer(model, loras,
    quantization)` make it, with only the weights outside the transformer blocks resident; the
    blocks are read from the file one at a time as the forward reaches them."""
    checkpoint = Checkpoint.open(checkpoint)
    stored = stored_quantization(checkpoint)
    model = load_transformer_as_stored(checkpoint, dtype, model_type, evaluate=False)
    spec = QuantizationSpec.for_mode(quantization) if quantization is not None else None
    if spec is not None:
        refuse_quantized(model)
    loras = [(path, float(strength)) for path, strength in loras]
    per_file = lora_layers(loras, _weight_shapes(model))
    if all(strength == 0 for _, strength in loras):  # as apply_loras: checked, nothing fused
        per_file = []
    modules = dict(model.named_modules())
    refuse_affine_targets({name for layers in per_file for name in layers}, modules)

    # The resident part: LoRAs into the layers outside the blocks, as apply_loras fuses them.
    outside = {}
    for layers, (path, _) in zip(per_file, loras):
        wanted = {name: keys for name, keys in layers.items() if not name.startswith(BLOCKS)}
        tensors = Checkpoint.open(path).load() if wanted else {}
        for name, (down, up, scale) in wanted.items():
            outside.setdefault(name, []).append((tensors[down], tensors[up], scale))
    fuse_lora_pairs(model, outside)

    # The blocks: skeletons with the final layer types, weights read per pass.
    blocks = list(model.transformer_blocks)
    stored_fp8 = (
        {path for path, module in model.named_modules() if path.startswith(BLOCKS) and isinstance(module, Fp8Linear)}
        if stored == "fp8"
        else set()
    )
    if spec is not None:
        for index, block in enumerate(blocks):
            quantize_block(block, index, spec, dtype)
    entries = checkpoint.entries
    stored_dtypes = {
        key[len(TRANSFORMER_PREFIX) :]: entry.dtype
        for key, entry in entries.items()
        if key.startswith(TRANSFORMER_PREFIX + BLOCKS)
    }
    block_loras = [
        {name: keys for name, keys in layers.items() if name.startswith(BLOCKS)} for layers in per_file
    ]  # fmt: skip

    def as_stored(index: int, tensors: dict[str, mx.array]) -> dict[str, mx.array]:
        """Block `index`'s tensors (keys relative to the block) as load_transformer_as_stored
        converts them."""
        if stored == "quantized":
            return tensors
        if stored == "fp8":
            prefix = f"{BLOCKS}{index}."
            relative = fp8_module_weights(
                {prefix + key: value for key, value in tensors.items()}, stored_dtypes, stored_fp8, dtype
            )
            return {key[len(prefix) :]: value for key, value in relative.items()}
        return {key: value.astype(dtype) if mx.issubdtype(value.dtype, mx.floating) else value
                for key, value in tensors.items()}  # fmt: skip

    def open_pass() -> BlockReader:
        tensors = block_tensors([checkpoint], TRANSFORMER_PREFIX + BLOCKS, decode_fp8=stored != "fp8")
        lora_tensors = [Checkpoint.open(path).load() if layers else {} for layers, (path, _) in zip(block_loras, loras)]

        def read(index: int) -> dict[str, mx.array]:
            block = blocks[index]
            weights = as_stored(index, tensors(index))
            layers = dict(block.named_modules())
            prefix = f"{BLOCKS}{index}."
            from_file = {path[len(prefix) :] for path in stored_fp8 if path.startswith(prefix)}  # e4m3 as stored
            if spec is not None and spec.mode == "fp8":  # Fp8Linear.from_linear
                for path, layer in layers.items():
                    if isinstance(layer, Fp8Linear) and path not in from_file:
                        for name in ("weight", "bias"):
                            if f"{path}.{name}" in weights:
                                weights[f"{path}.{name}"] = mx.to_fp8(weights[f"{path}.{name}"])
            pairs: dict[str, list] = {}
            for layers_of_file, file_tensors in zip(block_loras, lora_tensors):
                for name, (down, up, scale) in layers_of_file.items():
                    if name.startswith(prefix):
                        pairs.setdefault(name[len(prefix) :], []).append(
                            (file_tensors.pop(down), file_tensors.pop(up), scale)
                        )
            for path, layer_pairs in pairs.items():
                _fuse(weights, path, layer_pairs, isinstance(layers[path], Fp8Linear) or path in from_file)
            if spec is not None and spec.mode != "fp8":
                for path in from_file:  # quantize_block's dequantized_linear, on the file's bytes
                    weights.update(_dequantized(weights, path, dtype))
                weights = quantize_weights(weights, quantized_paths(block))
            return weights

        return read

    model.transformer_blocks = StreamedBlocks(blocks, open_pass)
    for _, parameter in tree_flatten(model.parameters()):
        mx.eval(parameter)
    if spec is not None:
        model.quantization = spec
    model.eval()
    return model


def streams(model: nn.Module) -> bool:
    """Whether a DiT's blocks are streamed (load_streamed_transformer)."""
    return isinstance(getattr(model, "transformer_blocks", None), StreamedBlocks)

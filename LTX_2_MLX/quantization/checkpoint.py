"""Quantized DiT checkpoints: saving/loading our own, and reading official fp8 files as fp8.

A quantized checkpoint keeps the official layout (`model.diffusion_model.` keys, the source
config under the metadata key `config`) and adds the metadata key `quantization`:
{"mode", "group_size", "bits", "layers": [module paths stored quantized]}. Affine layers
hold MLX's packed `weight` (uint32), `scales` and `biases`; fp8 layers hold e4m3 bytes (U8).
"""

import json
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_map_with_path

from LTX_2_MLX.loader.checkpoint import CheckpointError, load_module_weights, load_tensors, read_metadata, tensor_dtypes
from LTX_2_MLX.loader.convert import write_safetensors
from LTX_2_MLX.loader.transformer import CONNECTOR_PREFIXES, TRANSFORMER_PREFIX, transformer_config
from LTX_2_MLX.model.transformer import LTXModel, LTXModelType
from LTX_2_MLX.quantization.fp8_cast import Fp8Linear
from LTX_2_MLX.quantization.quantize import QuantizationSpec, quantized_layers

QUANTIZATION_KEY = "quantization"


def save_quantized_transformer(model: LTXModel, path: str | Path, source_config: dict) -> None:
    """Write a model quantized by quantize_transformer (or load_fp8_transformer) to `path`.

    `source_config` is the checkpoint config it was loaded from (read_config(source)); it is
    stored unchanged so every loader reads the file like the original.
    """
    spec = getattr(model, "quantization", None)
    layers = quantized_layers(model)
    if spec is None or not layers:
        raise ValueError(
            "the model is not quantized; call quantize_transformer(model, mode) first, "
            "or write a float checkpoint with scripts/convert_weights.py."
        )
    if "transformer" not in source_config:
        raise ValueError(
            f"source_config has no 'transformer' section (it has {sorted(source_config)}); "
            "pass read_config(<the checkpoint the model came from>)."
        )
    tensors = {TRANSFORMER_PREFIX + key: value for key, value in tree_flatten(model.parameters())}
    metadata = {
        "config": json.dumps(source_config),
        QUANTIZATION_KEY: json.dumps({**spec.to_dict(), "layers": layers}),
        "converted_by": "LTX_2_MLX",
    }
    write_safetensors(path, tensors, metadata)


def _quantization_metadata(path: Path) -> tuple[QuantizationSpec, list[str]]:
    metadata = read_metadata(path)
    if QUANTIZATION_KEY not in metadata:
        raise CheckpointError(
            f"{path}: no '{QUANTIZATION_KEY}' in its metadata, so it is not a quantized LTX_2_MLX checkpoint. "
            "Load a float or official fp8 file with load_transformer / load_fp8_transformer instead."
        )
    try:
        values = json.loads(metadata[QUANTIZATION_KEY])
        layers = values.pop("layers")
        return QuantizationSpec.from_dict(values), layers
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable '{QUANTIZATION_KEY}' metadata ({err}). Re-write the file.") from None


def load_quantized_transformer(path: str | Path, model_type: LTXModelType | None = None) -> LTXModel:
    """Build the DiT the file's config describes, with its quantized layers, and load it."""
    path = Path(path)
    spec, layers = _quantization_metadata(path)
    model = LTXModel(transformer_config(path, model_type))
    wanted = set(layers)
    tensors = load_tensors(path, TRANSFORMER_PREFIX)
    scaled = {key.removesuffix(".weight_scale") for key in tensors if key.endswith(".weight_scale")}

    def empty_layer(layer_path: str, module: nn.Module) -> nn.Module:
        if layer_path not in wanted:
            return module
        wanted.discard(layer_path)
        if not isinstance(module, nn.Linear):
            raise CheckpointError(f"{path}: quantized layer {layer_path} is not a Linear of the model.")
        output_dims, input_dims = module.weight.shape
        bias = "bias" in module
        if spec.mode == "fp8":
            return Fp8Linear(input_dims, output_dims, bias, scaled=layer_path in scaled)
        return nn.QuantizedLinear(input_dims, output_dims, bias, spec.group_size, spec.bits, mode="affine")

    model.update_modules(tree_map_with_path(empty_layer, model.leaf_modules(), is_leaf=nn.Module.is_module))
    if wanted:
        raise CheckpointError(
            f"{path}: its quantized layers {sorted(wanted)[:8]} are not in the model its config describes."
        )
    load_module_weights(model, tensors, path, "quantized transformer")
    del tensors
    for _, parameter in tree_flatten(model.parameters()):
        mx.eval(parameter)
    model.quantization = spec
    model.eval()
    return model


def load_fp8_transformer(
    path: str | Path, dtype: mx.Dtype = mx.bfloat16, model_type: LTXModelType | None = None
) -> LTXModel:
    """Load a checkpoint whose Linear weights are (partly) float8_e4m3fn, keeping them in fp8.

    Every Linear whose weight the file stores as F8_E4M3 becomes an Fp8Linear holding the
    file's bytes (its bias too when that is fp8); nothing is decoded to `dtype` on the way.
    A `weight_scale` beside the weight (scaled fp8 files) is kept in float32 and applied;
    `input_scale` is dropped: activations stay in `dtype` (weight-only fp8, like fp8_cast).
    All other tensors are cast to `dtype`.
    """
    path = Path(path)
    stored = {
        key[len(TRANSFORMER_PREFIX) :]: code for key, code in tensor_dtypes(path).items() if key.startswith(TRANSFORMER_PREFIX)
    }
    model = LTXModel(transformer_config(path, model_type))
    fp8_layers = []

    def fp8_layer(layer_path: str, module: nn.Module) -> nn.Module:
        if not isinstance(module, nn.Linear) or stored.get(f"{layer_path}.weight") != "F8_E4M3":
            return module
        fp8_layers.append(layer_path)
        output_dims, input_dims = module.weight.shape
        return Fp8Linear(input_dims, output_dims, "bias" in module, scaled=f"{layer_path}.weight_scale" in stored)

    model.update_modules(tree_map_with_path(fp8_layer, model.leaf_modules(), is_leaf=nn.Module.is_module))
    if not fp8_layers:
        raise CheckpointError(
            f"{path}: no Linear weight of its transformer is stored as F8_E4M3; "
            "load it with load_transformer (and quantize_transformer(model, 'fp8') if you want fp8)."
        )
    fp8_keys = {f"{layer}.{name}" for layer in fp8_layers for name in ("weight", "bias")}
    weights = {}
    for key, value in load_tensors(path, TRANSFORMER_PREFIX, decode_fp8=False).items():
        if key.startswith(CONNECTOR_PREFIXES) or key.endswith(".input_scale"):
            continue
        if key in fp8_keys and stored[key] == "F8_E4M3":
            pass  # the raw e4m3 bytes, as Fp8Linear holds them
        elif stored[key] == "F8_E4M3":
            value = mx.from_fp8(value, dtype=dtype)
        elif key.endswith(".weight_scale"):
            value = value.astype(mx.float32)
        elif mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(dtype)
        weights[key] = value
    load_module_weights(model, weights, path, "fp8 transformer")
    del weights
    for _, parameter in tree_flatten(model.parameters()):
        mx.eval(parameter)
    model.quantization = QuantizationSpec.for_mode("fp8")
    model.eval()
    return model

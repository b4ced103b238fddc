"""Quantized DiT checkpoints: saving/loading our own, and reading official fp8 files as fp8.

A quantized checkpoint keeps the official layout (`model.diffusion_model.` keys, the source
config under the metadata key `config`) and adds the metadata key `quantization`:
{"mode", "group_size", "bits", "layers": [module paths stored quantized]}. Affine layers
hold MLX's packed `weight` (uint32), `scales` and `biases`; fp8 layers hold e4m3 bytes (U8).
"""

import json
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_map_with_path

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, evaluate_parameters, load_module_weights
from LTX_2_MLX.loader.convert import check_output_path, write_safetensors
from LTX_2_MLX.loader.transformer import (
    CONNECTOR_PREFIXES,
    QUANTIZATION_KEY,
    TRANSFORMER_PREFIX,
    load_transformer,
    stored_quantization,
    transformer_config,
    transformer_tensors,
)
from LTX_2_MLX.model.common.fp8_linear import Fp8Linear
from LTX_2_MLX.model.transformer import LTXModel, LTXModelType
from LTX_2_MLX.quantization.quantize import QuantizationSpec, prepare_transformer, quantized_layers


def load_transformer_as_stored(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype = mx.bfloat16,
    model_type: LTXModelType | None = None,
    evaluate: bool = True,
) -> LTXModel:
    """The DiT as the file stores it: a file written by `ltx2-mlx quantize` loads as it was
    saved (int8/int4/fp8); official fp8 files keep their fp8 layers in fp8 (upcast on the fly),
    `dtype` applying to the rest; float files load as `dtype` (loader.load_transformer). With
    evaluate=False the weights stay lazy (nothing read until used)."""
    checkpoint = Checkpoint.open(checkpoint)
    stored = stored_quantization(checkpoint)
    if stored == "quantized":
        return load_quantized_transformer(checkpoint, model_type, evaluate)
    if stored == "fp8":
        return load_fp8_transformer(checkpoint, dtype, model_type, evaluate)
    return load_transformer(checkpoint, dtype, model_type, evaluate)


def load_prepared_transformer(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype = mx.bfloat16,
    loras: Sequence[tuple[str, float]] = (),
    quantization: str | None = None,
    model_type: LTXModelType | None = None,
) -> LTXModel:
    """The DiT as stored with `loras` fused and quantized to `quantization` (prepare_transformer),
    evaluated. When quantizing, the weights are read block by block as each is quantized: the
    whole float DiT is never resident (a bf16 file quantized to fp8 peaked at the bf16 size,
    35.5 GiB on an H200, when it was read whole first)."""
    model = load_transformer_as_stored(checkpoint, dtype, model_type, evaluate=quantization is None)
    if quantization is not None:
        mx.eval({name: value for name, value in model.parameters().items() if name != "transformer_blocks"})
    prepare_transformer(model, loras, quantization)
    return model


def save_quantized_transformer(model: LTXModel, path: str | Path, source: str | Path | Checkpoint) -> None:
    """Write a model quantized by quantize_transformer (or load_fp8_transformer) to `path` as a
    complete checkpoint: the quantized DiT, and every other tensor of `source` (the checkpoint
    the model came from: VAEs, vocoder, text projection and connectors) copied unchanged, with
    `source`'s metadata. Every loader reads the file like the original; the DiT's float weights
    of `source` are not read.
    """
    source = Checkpoint.open(source)
    path = check_output_path(path, [source.path])
    spec = getattr(model, "quantization", None)
    layers = quantized_layers(model)
    if spec is None or not layers:
        raise ValueError(
            "the model is not quantized; call quantize_transformer(model, mode) first, "
            "or write a float checkpoint with `ltx2-mlx convert`."
        )
    source.config("transformer", what="LTX-2 transformer")
    tensors = {
        key: value
        for key, value in source.load().items()
        if not key.startswith(TRANSFORMER_PREFIX) or key[len(TRANSFORMER_PREFIX) :].startswith(CONNECTOR_PREFIXES)
    }
    tensors.update({TRANSFORMER_PREFIX + key: value for key, value in tree_flatten(model.parameters())})
    quantization = json.dumps({**spec.to_dict(), "layers": layers})
    # The source's own fp8 bookkeeping (official fp8 files) would no longer describe the file.
    metadata = {k: v for k, v in source.metadata.items() if k != FP8_METADATA_KEY}
    write_safetensors(path, tensors, {**metadata, QUANTIZATION_KEY: quantization, "converted_by": "LTX_2_MLX"})


def _quantization_metadata(checkpoint: Checkpoint) -> tuple[QuantizationSpec, list[str]]:
    metadata = checkpoint.metadata
    if QUANTIZATION_KEY not in metadata:
        raise CheckpointError(
            f"{checkpoint.path}: no '{QUANTIZATION_KEY}' in its metadata, so it is not a quantized LTX_2_MLX "
            "checkpoint. "
            "Load a float or official fp8 file with load_transformer_as_stored instead."
        )
    try:
        values = json.loads(metadata[QUANTIZATION_KEY])
        layers = values.pop("layers")
        return QuantizationSpec.from_dict(values), layers
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{checkpoint.path}: unreadable '{QUANTIZATION_KEY}' metadata ({err}). Re-write the file."
        ) from None


def load_quantized_transformer(
    checkpoint: str | Path | Checkpoint, model_type: LTXModelType | None = None, evaluate: bool = True
) -> LTXModel:
    """Build the DiT the file's config describes, with its quantized layers, and load it."""
    checkpoint = Checkpoint.open(checkpoint)
    path = checkpoint.path
    spec, layers = _quantization_metadata(checkpoint)
    model = LTXModel(transformer_config(checkpoint, model_type))
    wanted = set(layers)
    tensors = transformer_tensors(checkpoint, None, resident=evaluate)
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
    if evaluate:
        evaluate_parameters(model, "loading the transformer")
    model.quantization = spec
    model.eval()
    return model


# Official fp8 files (Lightricks' ltx-2-19b-{dev,distilled}-fp8: blocks 1-42 in fp8, blocks 0
# and 43-47 and everything outside the blocks in bf16) and ComfyUI's scaled-fp8 layout store
# these per-layer companions beside an F8_E4M3 Linear weight:
#   .weight_scale  F32 scalar, the true weight being e4m3 value x weight_scale: applied;
#   .input_scale   F32 scalar, a calibrated activation scale that only ltx-core's TensorRT-LLM
#                  fp8 x fp8 matmul (fp8_scaled_mm) reads: dropped, activations stay in the
#                  compute dtype as in ltx-core's fp8_cast, which folds weight_scale alone;
#   .comfy_quant   U8 JSON bytes, ComfyUI's per-layer format marker: checked, then dropped.
# The metadata key FP8_METADATA_KEY ({"format_version", "layers": {name: {"format"}}}) lists
# the quantized layers; it is checked against the tensors and otherwise bookkeeping.
FP8_FORMAT = "float8_e4m3fn"
FP8_COMPANIONS = (".weight_scale", ".input_scale", ".comfy_quant")
FP8_DROPPED_COMPANIONS = (".input_scale", ".comfy_quant")
FP8_METADATA_KEY = "_quantization_metadata"
_USE_BF16 = "Load the bf16 checkpoint (e.g. ltx-2-19b-dev.safetensors) instead."


def _listed(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _refuse_other_formats(path: Path, formats: dict[str, object], source: str) -> None:
    other = {layer: fmt for layer, fmt in formats.items() if fmt != FP8_FORMAT}
    if other:
        shown = _listed(f"{layer} is {fmt!r}" for layer, fmt in other.items())
        raise CheckpointError(f"{path}: {shown} (per {source}); only {FP8_FORMAT!r} layers are read. {_USE_BF16}")


def _check_fp8_companions(path: Path, tensors: dict[str, mx.array], fp8_layers: set[str], parameters: set[str]) -> None:
    """Refuse any transformer tensor that is neither a model parameter nor a per-tensor
    companion (FP8_COMPANIONS) of an F8_E4M3 Linear weight, naming it."""
    companions = {key for key in tensors if key.endswith(FP8_COMPANIONS)}
    unknown = set(tensors) - parameters - companions
    if unknown:
        raise CheckpointError(
            f"{path}: tensors {_listed(unknown)} are neither weights of the transformer its config describes nor "
            f"fp8 companions ({', '.join(FP8_COMPANIONS)}); this layout is not supported. {_USE_BF16}"
        )
    orphans = {key for key in companions if key.rsplit(".", 1)[0] not in fp8_layers}
    if orphans:
        raise CheckpointError(
            f"{path}: tensors {_listed(orphans)} accompany weights not stored as F8_E4M3, a quantization this "
            f"loader does not read. {_USE_BF16}"
        )
    markers = {}
    for key in sorted(companions):
        value = tensors[key]
        if key.endswith(".comfy_quant"):
            try:
                markers[key.removesuffix(".comfy_quant")] = json.loads(bytes(value.tolist()))["format"]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise CheckpointError(
                    f"{path}: {key} is not a JSON layer marker ({err!r}). Re-download the file."
                ) from None
        elif value.size != 1 or not mx.issubdtype(value.dtype, mx.floating):
            raise CheckpointError(
                f"{path}: {key} is {str(value.dtype).removeprefix('mlx.core.')} of shape {tuple(value.shape)}; "
                f"only per-tensor fp8 scales (one float) are read, not per-channel or block scales. {_USE_BF16}"
            )
    _refuse_other_formats(path, markers, "its .comfy_quant tensors")


def _check_fp8_metadata(checkpoint: Checkpoint, stored: dict[str, str], fp8_layers: set[str]) -> None:
    """The metadata's transformer layers must all be F8_E4M3 layers marked float8_e4m3fn; the
    names of other parts of the file are for their own loaders."""
    path = checkpoint.path
    raw = checkpoint.metadata.get(FP8_METADATA_KEY)
    if raw is None:
        return
    try:
        layers = json.loads(raw)["layers"]
        formats = {name.removeprefix(TRANSFORMER_PREFIX): conf["format"] for name, conf in layers.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: unreadable '{FP8_METADATA_KEY}' metadata ({err!r}). Re-download the file."
        ) from None
    formats = {name: fmt for name, fmt in formats.items() if f"{name}.weight" in stored}
    _refuse_other_formats(path, formats, f"its '{FP8_METADATA_KEY}' metadata")
    not_fp8 = {name for name in formats if name not in fp8_layers}
    if not_fp8:
        raise CheckpointError(
            f"{path}: its '{FP8_METADATA_KEY}' metadata lists {_listed(not_fp8)} as {FP8_FORMAT} but their "
            "weights are not stored as F8_E4M3; the file is inconsistent. Re-download it."
        )


def load_fp8_transformer(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype = mx.bfloat16,
    model_type: LTXModelType | None = None,
    evaluate: bool = True,
) -> LTXModel:
    """Load a checkpoint whose Linear weights are (partly) float8_e4m3fn, keeping them in fp8:
    the official ltx-2-19b-*-fp8 files, ComfyUI scaled-fp8 files, and unscaled fp8_cast files.

    Every Linear whose weight the file stores as F8_E4M3 becomes an Fp8Linear holding the
    file's bytes (its bias too when that is fp8); nothing is decoded to `dtype` on the way.
    Of the companions beside such a weight (FP8_COMPANIONS), `weight_scale` is kept in float32
    and applied; `input_scale` and `comfy_quant` are dropped: weight-only fp8 with activations
    in `dtype`, like ltx-core's fp8_cast. Any other tensor the model does not have is refused
    by name. All other tensors are cast to `dtype`.
    """
    checkpoint = Checkpoint.open(checkpoint)
    path = checkpoint.path
    stored = {
        key[len(TRANSFORMER_PREFIX) :]: entry.dtype
        for key, entry in checkpoint.entries.items()
        if key.startswith(TRANSFORMER_PREFIX) and not key[len(TRANSFORMER_PREFIX) :].startswith(CONNECTOR_PREFIXES)
    }
    model = LTXModel(transformer_config(checkpoint, model_type))
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
    tensors = transformer_tensors(checkpoint, dtype, resident=evaluate, decode_fp8=False)
    parameters = {key for key, _ in tree_flatten(model.parameters())}
    _check_fp8_companions(path, tensors, set(fp8_layers), parameters)
    _check_fp8_metadata(checkpoint, stored, set(fp8_layers))
    weights = fp8_module_weights(tensors, stored, fp8_layers, dtype)
    del tensors
    load_module_weights(model, weights, path, "fp8 transformer")
    del weights
    if evaluate:
        evaluate_parameters(model, "loading the transformer")
    model.quantization = QuantizationSpec.for_mode("fp8")
    model.eval()
    return model


def fp8_module_weights(
    tensors: dict[str, mx.array], stored: dict[str, str], fp8_layers, dtype: mx.Dtype
) -> dict[str, mx.array]:
    """An fp8 file's DiT tensors (keys relative to the DiT, fp8 as raw bytes) as the weights of
    its model: e4m3 bytes kept for the `fp8_layers`' weight and bias, other e4m3 tensors
    decoded to `dtype`, weight scales as float32 scalars, input scales and markers dropped,
    other floats cast to `dtype`. `stored` is each key's safetensors dtype."""
    fp8_keys = {f"{layer}.{name}" for layer in fp8_layers for name in ("weight", "bias")}
    weights = {}
    for key, value in tensors.items():
        if key.endswith(FP8_DROPPED_COMPANIONS):
            continue
        if key in fp8_keys and stored[key] == "F8_E4M3":
            pass  # the raw e4m3 bytes, as Fp8Linear holds them
        elif stored[key] == "F8_E4M3":
            value = mx.from_fp8(value, dtype=dtype)
        elif key.endswith(".weight_scale"):
            value = value.astype(mx.float32).reshape(())
        elif mx.issubdtype(value.dtype, mx.floating):
            value = value.astype(dtype)
        weights[key] = value
    return weights

"""Loading the DiT from an official single-file LTX-2 checkpoint (or one we converted)."""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import (
    CheckpointError,
    evaluate_parameters,
    load_module_weights,
    load_tensors,
    read_config,
    read_metadata,
    tensor_dtypes,
    tensor_names,
)
from LTX_2_MLX.model.transformer import LTXModel, LTXModelConfig, LTXModelType

TRANSFORMER_PREFIX = "model.diffusion_model."
# Text-connector weights share the DiT's prefix but belong to the text encoder side.
CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.", "embeddings_connector.")


def transformer_config(path: str | Path, model_type: LTXModelType | None = None) -> LTXModelConfig:
    """The DiT config of a checkpoint; audio+video when it holds audio weights, unless told."""
    config = read_config(path, section="transformer", what="LTX-2 transformer")
    names = tensor_names(path)
    if not any(n.startswith(TRANSFORMER_PREFIX) for n in names):
        raise CheckpointError(
            f"{path}: no '{TRANSFORMER_PREFIX}*' tensors, so it holds no transformer. "
            "Pass the LTX-2 model checkpoint (e.g. ltx-2-19b-dev.safetensors)."
        )
    if model_type is None:
        has_audio = f"{TRANSFORMER_PREFIX}audio_patchify_proj.weight" in names
        model_type = LTXModelType.AudioVideo if has_audio else LTXModelType.VideoOnly
    try:
        return LTXModelConfig.from_checkpoint_config(config, model_type)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}. Is this an LTX-2 checkpoint?") from None


def load_transformer(
    path: str | Path, dtype: mx.Dtype = mx.bfloat16, model_type: LTXModelType | None = None
) -> LTXModel:
    """Build the DiT its config describes and load its weights, tensor by tensor.

    Files written by `ltx2-mlx quantize` load as they were saved (int8/int4/fp8); official
    fp8 files keep their fp8 layers in fp8 (upcast on the fly); `dtype` applies to the rest.
    """
    if "quantization" in read_metadata(path):
        from LTX_2_MLX.quantization import load_quantized_transformer

        return load_quantized_transformer(path, model_type)
    if any(k.startswith(TRANSFORMER_PREFIX) and v == "F8_E4M3" for k, v in tensor_dtypes(path).items()):
        from LTX_2_MLX.quantization import load_fp8_transformer

        return load_fp8_transformer(path, dtype, model_type)
    model = LTXModel(transformer_config(path, model_type))
    weights = {
        key: value
        for key, value in load_tensors(path, TRANSFORMER_PREFIX).items()
        if not key.startswith(CONNECTOR_PREFIXES)
    }
    load_module_weights(model, weights, path, "transformer", dtype=dtype)
    del weights
    evaluate_parameters(model, "loading the transformer")
    model.eval()
    return model

"""Loading the DiT from an official single-file LTX-2 checkpoint (or one we converted).

Files whose DiT is stored quantized (official fp8, or written by `ltx2-mlx quantize`) are read
by `LTX_2_MLX.quantization.load_transformer_as_stored`, which dispatches to this loader for
float files."""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, evaluate_parameters, load_module_weights
from LTX_2_MLX.model.transformer import LTXModel, LTXModelConfig, LTXModelType

TRANSFORMER_PREFIX = "model.diffusion_model."
# Text-connector weights share the DiT's prefix but belong to the text encoder side.
CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.", "embeddings_connector.")
# The metadata key `ltx2-mlx quantize` writes (see quantization/checkpoint.py).
QUANTIZATION_KEY = "quantization"


def transformer_config(checkpoint: str | Path | Checkpoint, model_type: LTXModelType | None = None) -> LTXModelConfig:
    """The DiT config of a checkpoint; audio+video when it holds audio weights, unless told."""
    checkpoint = Checkpoint.open(checkpoint)
    config = checkpoint.config("transformer", what="LTX-2 transformer")
    if not checkpoint.holds(TRANSFORMER_PREFIX):
        raise CheckpointError(
            f"{checkpoint.path}: no '{TRANSFORMER_PREFIX}*' tensors, so it holds no transformer. "
            "Pass the LTX-2 model checkpoint (e.g. ltx-2-19b-dev.safetensors)."
        )
    if model_type is None:
        has_audio = f"{TRANSFORMER_PREFIX}audio_patchify_proj.weight" in checkpoint.entries
        model_type = LTXModelType.AudioVideo if has_audio else LTXModelType.VideoOnly
    try:
        return LTXModelConfig.from_checkpoint_config(config, model_type)
    except ValueError as err:
        raise CheckpointError(f"{checkpoint.path}: {err}. Is this an LTX-2 checkpoint?") from None


def stored_quantization(checkpoint: str | Path | Checkpoint) -> str | None:
    """How the file stores its DiT: "quantized" (written by `ltx2-mlx quantize`), "fp8" (an
    official or ComfyUI fp8 file) or None (floating point), from the header alone."""
    checkpoint = Checkpoint.open(checkpoint)
    if QUANTIZATION_KEY in checkpoint.metadata:
        return "quantized"
    if any(n.startswith(TRANSFORMER_PREFIX) and e.dtype == "F8_E4M3" for n, e in checkpoint.entries.items()):
        return "fp8"
    return None


_FLOAT_CODES = {"F16": mx.float16, "BF16": mx.bfloat16, "F32": mx.float32, "F64": mx.float64}


def transformer_tensors(
    checkpoint: Checkpoint, dtype: mx.Dtype | None, resident: bool, decode_fp8: bool = True
) -> dict[str, mx.array]:
    """The DiT's tensors (prefix removed, text connectors left out). `resident`: the caller
    evaluates them all next. They are then read at once (`Checkpoint.load_resident`, which holds
    every file tensor before any is cast) when casting to `dtype` changes at most 1/16 of their
    bytes, so that holding them costs little beyond the model; otherwise each is read when
    evaluated."""
    keep = lambda key: not key.startswith(CONNECTOR_PREFIXES)  # noqa: E731
    entries = [
        entry
        for name, entry in checkpoint.entries.items()
        if name.startswith(TRANSFORMER_PREFIX) and keep(name[len(TRANSFORMER_PREFIX) :])
    ]
    cast = sum(e.nbytes for e in entries if dtype is not None and _FLOAT_CODES.get(e.dtype, dtype) != dtype)
    if resident and cast * 16 <= sum(e.nbytes for e in entries):
        return checkpoint.load_resident(TRANSFORMER_PREFIX, decode_fp8, keep, "reading the transformer")
    return checkpoint.load_groups((TRANSFORMER_PREFIX,), decode_fp8, keep=keep)[TRANSFORMER_PREFIX]


def load_transformer(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype = mx.bfloat16,
    model_type: LTXModelType | None = None,
    evaluate: bool = True,
) -> LTXModel:
    """Build the DiT its config describes and load its floating-point weights, tensor by tensor,
    as `dtype` (with evaluate=False left lazy: nothing read until used). A file that stores the
    DiT quantized is refused, naming the loader that reads it."""
    checkpoint = Checkpoint.open(checkpoint)
    stored = stored_quantization(checkpoint)
    if stored is not None:
        raise CheckpointError(
            f"{checkpoint.path}: its transformer is stored {'in fp8' if stored == 'fp8' else 'quantized'}; "
            "load it with LTX_2_MLX.quantization.load_transformer_as_stored, which keeps it that way."
        )
    model = LTXModel(transformer_config(checkpoint, model_type))
    weights = transformer_tensors(checkpoint, dtype, resident=evaluate)
    load_module_weights(model, weights, checkpoint.path, "transformer", dtype=dtype)
    del weights
    if evaluate:
        evaluate_parameters(model, "loading the transformer")
    model.eval()
    return model

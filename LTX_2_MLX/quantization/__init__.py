"""Weight quantization of the DiT: fp8 storage mirroring ltx-core's fp8_cast policy, and MLX
affine int8/int4; LoRA fusion in the right order; saving and loading quantized checkpoints,
and loading any checkpoint's DiT as it is stored (`load_transformer_as_stored`)."""

from LTX_2_MLX.model.common.fp8_linear import Fp8Linear
from LTX_2_MLX.quantization.checkpoint import (
    load_fp8_transformer,
    load_prepared_transformer,
    load_quantized_transformer,
    load_transformer_as_stored,
    save_quantized_transformer,
)
from LTX_2_MLX.quantization.fp8_cast import is_fp8_cast_target
from LTX_2_MLX.quantization.quantize import (
    GROUP_SIZE,
    MODES,
    QuantizationSpec,
    parameter_bytes,
    prepare_transformer,
    quantize_transformer,
    quantized_layers,
)

__all__ = [
    "GROUP_SIZE",
    "MODES",
    "Fp8Linear",
    "QuantizationSpec",
    "is_fp8_cast_target",
    "load_fp8_transformer",
    "load_prepared_transformer",
    "load_quantized_transformer",
    "load_transformer_as_stored",
    "parameter_bytes",
    "prepare_transformer",
    "quantize_transformer",
    "quantized_layers",
    "save_quantized_transformer",
]

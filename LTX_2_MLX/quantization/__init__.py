"""Weight quantization of the DiT: fp8 storage mirroring ltx-core's fp8_cast policy, and MLX
affine int8/int4; saving and loading quantized checkpoints."""

from LTX_2_MLX.quantization.checkpoint import (
    load_fp8_transformer,
    load_quantized_transformer,
    save_quantized_transformer,
)
from LTX_2_MLX.quantization.fp8_cast import Fp8Linear, is_fp8_cast_target
from LTX_2_MLX.quantization.quantize import (
    GROUP_SIZE,
    MODES,
    QuantizationSpec,
    parameter_bytes,
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
    "load_quantized_transformer",
    "parameter_bytes",
    "quantize_transformer",
    "quantized_layers",
    "save_quantized_transformer",
]

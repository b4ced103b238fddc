"""Weight quantization of a loaded DiT: fp8 (ltx-core's fp8_cast) or MLX affine int8/int4, and
LoRA fusion in the order the reference applies the two."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_map_with_path

from LTX_2_MLX.loader.lora import apply_loras, fuse_lora_pairs, lora_pairs
from LTX_2_MLX.model.common.fp8_linear import Fp8Linear, fp8_to
from LTX_2_MLX.progress import progress_bar
from LTX_2_MLX.quantization.fp8_cast import is_fp8_cast_target

GROUP_SIZE = 64
MODES = ("fp8", "int8", "int4")


@dataclass(frozen=True)
class QuantizationSpec:
    """How a transformer's weights are stored; written into a quantized checkpoint's metadata."""

    mode: str
    group_size: int | None = None  # affine modes only
    bits: int | None = None  # affine modes only

    @classmethod
    def for_mode(cls, mode: str) -> "QuantizationSpec":
        if mode == "fp8":
            return cls("fp8")
        if mode in ("int8", "int4"):
            return cls(mode, GROUP_SIZE, int(mode[3:]))
        raise ValueError(f"quantization mode {mode!r} is not one of {', '.join(MODES)}; e.g. mode='int8'")

    @classmethod
    def from_dict(cls, values: dict) -> "QuantizationSpec":
        spec = cls(**values)
        if spec != cls.for_mode(spec.mode):
            raise ValueError(
                f"unsupported quantization {values}; this version writes {asdict(cls.for_mode(spec.mode))}"
            )
        return spec

    def to_dict(self) -> dict:
        return asdict(self)


def quantizable(path: str, module: nn.Module, spec: QuantizationSpec) -> bool:
    """The layers ltx-core's fp8_cast downcasts: the blocks' attention projections and
    feed-forward Linears (not AdaLN, timestep, patchify/proj_out, caption projection or the
    LTX-2.3 per-head gates, which are small and feed the residual stream's scales). The
    affine modes also need the input width to be a multiple of the group size."""
    if not isinstance(module, nn.Linear) or not is_fp8_cast_target(path):
        return False
    return spec.mode == "fp8" or module.weight.shape[1] % spec.group_size == 0


def _quantized_layer(module: nn.Linear, spec: QuantizationSpec) -> nn.Module:
    if spec.mode == "fp8":
        return Fp8Linear.from_linear(module)
    return nn.QuantizedLinear.from_linear(module, group_size=spec.group_size, bits=spec.bits, mode="affine")


def dequantized_linear(layer: Fp8Linear, dtype: mx.Dtype) -> nn.Linear:
    """An fp8 layer as a Linear in `dtype` computing with the same weight (e4m3 value x scale)."""
    output_dims, input_dims = layer.weight.shape
    linear = nn.Linear(input_dims, output_dims, bias="bias" in layer)
    linear.weight = layer.dequantized_weight(dtype)
    if "bias" in layer:
        linear.bias = fp8_to(layer.bias, dtype)
    return linear


def quantize_transformer(model: nn.Module, mode: str, loras: Sequence[tuple[str, float]] = ()) -> nn.Module:
    """Quantize an LTXModel's block Linears in place ("fp8", "int8" or "int4") and return it,
    fusing `loras` [(path, strength), ...] in the reference's order: fp8 layers take the LoRA
    after the cast (as fp8_cast does); int8/int4 quantize the fused weights.

    Block by block, each evaluated before the next: a block's float weights (read now when the
    model was loaded lazily) are freed as soon as its quantized copy exists, so the peak stays
    near the quantized model plus one float block. A model read from an fp8 file keeps its fp8
    layers for "fp8" and has them dequantized, then quantized, for "int8"/"int4".
    """
    spec = QuantizationSpec.for_mode(mode)
    refuse_quantized(model)
    dtype = model.proj_out.weight.dtype  # never quantized: the model's float dtype
    pairs = lora_pairs(model, loras) if loras else {}
    outside = [name for name in pairs if not name.startswith("transformer_blocks.")]
    fuse_lora_pairs(model, {name: pairs.pop(name) for name in outside})  # nothing there is quantized
    blocks = model.transformer_blocks
    for index, block in enumerate(progress_bar(blocks, desc=f"quantizing the transformer to {mode}", unit="block",
                                               leave=False, disable=len(blocks) < 8)):  # fmt: skip
        prefix = f"transformer_blocks.{index}."
        mine = {name[len(prefix) :]: pairs[name] for name in pairs if name.startswith(prefix)}
        if spec.mode != "fp8":
            fuse_lora_pairs(block, mine)
        quantize_block(block, index, spec, dtype)
        if spec.mode == "fp8":
            fuse_lora_pairs(block, mine)
        mx.eval(block.parameters())
    model.quantization = spec
    return model


def refuse_quantized(model: nn.Module) -> None:
    """Refuse a model with int8/int4 layers (fp8 ones, as an fp8 file holds them, may be
    quantized further)."""
    already = [path for path, module in model.named_modules() if isinstance(module, nn.QuantizedLinear)]
    if already:
        raise ValueError(
            f"the model is already quantized ({len(already)} layers, e.g. {sorted(already)[0]}); "
            "quantize a freshly loaded model instead."
        )


def quantize_block(block: nn.Module, index: int, spec: QuantizationSpec, dtype: mx.Dtype | None = None) -> nn.Module:
    """Swap transformer block `index`'s quantizable Linears for their quantized layers, lazily
    (nothing evaluated). For int8/int4, fp8 layers are first dequantized to `dtype`."""
    prefix = f"transformer_blocks.{index}."

    def convert(path: str, module: nn.Module) -> nn.Module:
        if isinstance(module, Fp8Linear) and spec.mode != "fp8" and is_fp8_cast_target(prefix + path):
            module = dequantized_linear(module, dtype)
        return _quantized_layer(module, spec) if quantizable(prefix + path, module, spec) else module

    block.update_modules(tree_map_with_path(convert, block.leaf_modules(), is_leaf=nn.Module.is_module))
    return block


def quantized_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers stored quantized (fp8 or affine), sorted."""
    return sorted(path for path, module in model.named_modules() if isinstance(module, (Fp8Linear, nn.QuantizedLinear)))


def parameter_bytes(model: nn.Module) -> int:
    """Sum of nbytes over all parameters: the memory the weights occupy."""
    return sum(value.nbytes for _, value in tree_flatten(model.parameters()))


def prepare_transformer(model: nn.Module, loras: Sequence[tuple[str, float]], quantization: str | None) -> nn.Module:
    """Fuse LoRAs and quantize (quantize_transformer's order), in place; returns the model."""
    if quantization is not None:
        return quantize_transformer(model, quantization, loras)
    return apply_loras(model, loras) if loras else model

"""Fusing LoRAs into a loaded DiT's weights, as ltx-core's `loader/fuse_loras.py` does.

LoRA files use ComfyUI keys, `diffusion_model.<module>.lora_A.weight` (rank x in) and
`.lora_B.weight` (out x rank); the reference strips `diffusion_model.` (LTXV_LORA_COMFY_RENAMING_MAP)
and, per target weight W of dtype D:

    delta_i = ((B_i * strength_i) @ A_i), computed in the LoRA file's dtype, cast to D
    W' = sum_i delta_i + W                   (the sum accumulated in float32, as torch.sum does)

with no alpha/rank scaling: `.alpha` entries are read and ignored, exactly as in the reference.
For fp8 weights D is bfloat16 and W' is rounded back to e4m3 (the reference's CPU path; on
CUDA it rounds stochastically). Scaled fp8 weights are dequantized in float32, fused and
re-quantized with a new per-tensor scale.

Unlike the reference, which only looks up LoRA keys for the weights it has and so silently
drops everything else, a LoRA key that names no weight of the model is an error: a LoRA for
another model must not be ignored. The one deliberate exception mirrored from the reference
is the text connectors: their keys share the DiT's prefix, the reference fuses them into the
transformer's state dict and then drops them, so they are skipped here too.
"""

from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.loader.checkpoint import CheckpointError, load_tensors
from LTX_2_MLX.loader.transformer import CONNECTOR_PREFIXES
from LTX_2_MLX.quantization.fp8_cast import Fp8Linear

LORA_COMFY_PREFIX = "diffusion_model."
LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
LORA_IGNORED_SUFFIXES = (".alpha",)  # read but unused by the reference's fusion
FP8_E4M3_MAX = 448.0


def _shown(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def read_lora(path: str | Path) -> dict[str, tuple[mx.array, mx.array]]:
    """module path -> (A, B) of a ComfyUI-style LoRA file, keys renamed as the reference does."""
    tensors = {key.replace(LORA_COMFY_PREFIX, ""): value for key, value in load_tensors(path).items()}
    down = {k[: -len(LORA_A_SUFFIX)]: v for k, v in tensors.items() if k.endswith(LORA_A_SUFFIX)}
    up = {k[: -len(LORA_B_SUFFIX)]: v for k, v in tensors.items() if k.endswith(LORA_B_SUFFIX)}
    unknown = [k for k in tensors if not k.endswith((LORA_A_SUFFIX, LORA_B_SUFFIX, *LORA_IGNORED_SUFFIXES))]
    if unknown:
        raise CheckpointError(
            f"{path}: keys that are not LoRA A/B matrices: {_shown(unknown)}. Only ComfyUI-style "
            f"'diffusion_model.<module>{LORA_A_SUFFIX}' / '{LORA_B_SUFFIX}' LoRAs are supported, as in ltx-core."
        )
    unpaired = sorted(set(down) ^ set(up))
    if unpaired:
        raise CheckpointError(f"{path}: LoRA modules with only one of lora_A/lora_B: {_shown(unpaired)}. Re-export it.")
    if not down:
        raise CheckpointError(f"{path}: no '*{LORA_A_SUFFIX}' tensors, so it is not a LoRA file.")
    return {module: (down[module], up[module]) for module in down}


def _lora_targets(
    model: nn.Module, path: str | Path, lora: dict[str, tuple[mx.array, mx.array]]
) -> dict[str, tuple[mx.array, mx.array]]:
    """The LoRA's modules that the model has, checked against the model's weight shapes."""
    modules = dict(model.named_modules())
    targets, missing, misshapen = {}, [], []
    for name, (down, up) in lora.items():
        if name.startswith(CONNECTOR_PREFIXES):
            continue  # text-connector LoRA weights: the reference drops them too (module docstring)
        module = modules.get(name)
        if module is None or "weight" not in module or module["weight"].ndim != 2:
            missing.append(name)
            continue
        output_dims, input_dims = module["weight"].shape
        if isinstance(module, nn.QuantizedLinear):
            input_dims = input_dims * 32 // module.bits
        rank_matches = down.ndim == up.ndim == 2 and down.shape[0] == up.shape[1]
        if not rank_matches or (up.shape[0], down.shape[1]) != (output_dims, input_dims):
            misshapen.append(
                f"{name} (lora_A {tuple(down.shape)}, lora_B {tuple(up.shape)}; weight {(output_dims, input_dims)})"
            )
            continue
        targets[name] = (down, up)
    problems = []
    if missing:
        problems.append(f"modules the model does not have: {_shown(missing)}")
    if misshapen:
        problems.append(f"wrong shapes: {_shown(misshapen)}")
    if problems:
        raise CheckpointError(
            f"{path}: this LoRA does not fit the model; "
            + "; ".join(problems)
            + ". Is it a LoRA for this model (LTX-2 vs LTX-2.3, audio-video vs video-only)?"
        )
    return targets


def _lora_product(down: mx.array, up: mx.array, strength: float) -> mx.array:
    """(B * strength) @ A in the LoRA's dtype with torch's rounding: the scalar product and
    the matmul are each computed in float32 and rounded once to that dtype (MLX would round
    the strength itself to bfloat16 first)."""
    scaled = (up.astype(mx.float32) * strength).astype(up.dtype)
    return (scaled.astype(mx.float32) @ down.astype(mx.float32)).astype(up.dtype)


def lora_delta(pairs: list[tuple[mx.array, mx.array, float]], dtype: mx.Dtype) -> mx.array:
    """sum_i ((B_i * strength_i) @ A_i) as `dtype`: each product in its LoRA's dtype and
    cast, then summed in float32 (torch.sum's accumulator) and rounded once to `dtype`."""
    deltas = [_lora_product(down, up, strength).astype(dtype) for down, up, strength in pairs]
    if len(deltas) == 1:
        return deltas[0]
    total = deltas[0].astype(mx.float32)
    for delta in deltas[1:]:
        total = total + delta.astype(mx.float32)
    return total.astype(dtype)


def _fuse_fp8(layer: Fp8Linear, pairs: list[tuple[mx.array, mx.array, float]]) -> None:
    if "weight_scale" in layer:
        # Scaled fp8: dequantize, add the (bfloat16) delta and re-quantize per tensor, in float32.
        delta = lora_delta(pairs, mx.bfloat16).astype(mx.float32)
        fused = mx.from_fp8(layer.weight, dtype=mx.float32) * layer.weight_scale + delta
        # torch evaluates `448 / amax` as `amax.reciprocal() * 448`: same rounding here.
        scale = (1.0 / mx.abs(fused).max()) * FP8_E4M3_MAX
        layer.weight = mx.to_fp8(mx.clip(fused * scale, -FP8_E4M3_MAX, FP8_E4M3_MAX))
        layer.weight_scale = 1.0 / scale  # a true division: mx.reciprocal may differ by an ulp
    else:
        layer.weight = mx.to_fp8(lora_delta(pairs, mx.bfloat16) + mx.from_fp8(layer.weight, dtype=mx.bfloat16))


def apply_loras(model: nn.Module, loras: Sequence[tuple[str | Path, float]]) -> nn.Module:
    """Fuse LoRAs [(path, strength), ...] into `model`'s weights in place and return it.

    Every file is read and checked against the model before any weight changes. As in the
    reference, nothing is fused when all strengths are zero. Fuse before quantizing to
    int8/int4; fp8 (Fp8Linear) layers are fused the way the reference fuses its fp8 weights.
    """
    loras = [(path, float(strength)) for path, strength in loras]
    per_module: dict[str, list[tuple[mx.array, mx.array, float]]] = {}
    for path, strength in loras:
        for name, (down, up) in _lora_targets(model, path, read_lora(path)).items():
            per_module.setdefault(name, []).append((down, up, strength))
    if all(strength == 0 for _, strength in loras):
        return model
    modules = dict(model.named_modules())
    affine = sorted(name for name in per_module if isinstance(modules[name], nn.QuantizedLinear))
    if affine:
        raise ValueError(
            f"cannot fuse LoRAs into int8/int4 layers ({_shown(affine)}): apply_loras before quantize_transformer."
        )
    for name, pairs in per_module.items():
        layer = modules[name]
        if isinstance(layer, Fp8Linear):
            _fuse_fp8(layer, pairs)
        else:
            layer.weight = lora_delta(pairs, layer.weight.dtype) + layer.weight
        # One layer at a time: its LoRA matrices and old weight are freed before the next.
        mx.eval(layer.parameters())
    return model

"""Fusing LoRAs into a loaded DiT's weights, as ltx-core's `loader/fuse_loras.py` does, from the
LoRA layouts people download.

A LoRA file holds, per adapted layer, A (rank x in), B (out x rank) and optionally a scalar
alpha, under keys `<prefix><module><suffix>`:

    suffix   .lora_A.weight / .lora_B.weight (PEFT, ComfyUI) or .lora_down.weight / .lora_up.weight
             (kohya), and .alpha
    prefix   diffusion_model.        ComfyUI's, the one Lightricks' trainer and ai-toolkit write
             model.diffusion_model.  the checkpoint's own
             transformer.            diffusers': its top-level modules have diffusers' names
                                     (proj_in, time_embed, av_cross_attn_*...), mapped back here
             lora_unet_              kohya's (musubi-tuner): the module path with "." flattened to
                                     "_" (musubi's training files add "model_"), resolved against
                                     the model's own module names, which contain "_" themselves
             none                    ltx-core's module names as they are

The reference strips `diffusion_model.` (LTXV_LORA_COMFY_RENAMING_MAP) and, per target weight W
of dtype D:

    delta_i = ((B_i * s_i) @ A_i), computed in the LoRA file's dtype, cast to D
    W' = sum_i delta_i + W                   (the sum accumulated in float32, as torch.sum does)

with s_i the LoRA's strength. Where this differs from the reference: a module with `.alpha` is
also scaled by alpha/rank (rank = A's first dimension), s_i = strength * (alpha / rank), as
ComfyUI does; the reference reads `.alpha` and ignores it. ComfyUI is what users compare a LoRA
against, and the trainers that write `.alpha` train with that scale (musubi-tuner folds it into
B when it writes its ComfyUI copy). Without `.alpha`, which is what Lightricks' trainer writes,
s_i is the strength, bit-exact with the reference. A diffusers file without `.alpha` takes alpha
from the PEFT config diffusers saves in its metadata (`lora_adapter_metadata`), as diffusers does.

For fp8 weights D is bfloat16 and W' is rounded back to e4m3 (the reference's CPU path; on
CUDA it rounds stochastically). Scaled fp8 weights are dequantized in float32, fused and
re-quantized with a new per-tensor scale.

Unlike the reference, which only looks up LoRA keys for the weights it has and so silently
drops everything else, a LoRA key that names no weight of the model is an error: a LoRA for
another model must not be ignored. The one deliberate exception mirrored from the reference
is the text-encoder side of a LoRA: the text connectors' keys share the DiT's prefix, the
reference fuses them into the transformer's state dict and then drops them, and it never
looks at the feature extractor's (`text_embedding_projection.`), so both are skipped here too,
in every layout (diffusers calls them `connectors.`).

`check_lora_file` runs every check on the safetensors header alone, before any model loads;
`apply_loras` runs the same checks (`_lora_modules`) before it reads a tensor.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError
from LTX_2_MLX.loader.transformer import CONNECTOR_PREFIXES
from LTX_2_MLX.model.common.fp8_linear import Fp8Linear
from LTX_2_MLX.model.transformer import LTXModel, LTXModelConfig

KOHYA_PREFIX = "lora_unet_"
KOHYA_WRAPPER_PREFIX = "model_"  # musubi-tuner trains a wrapper whose `model` is the DiT
DIFFUSERS_PREFIX = "transformer."
# Tried in order; the last (no prefix) matches every key.
LAYOUT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", DIFFUSERS_PREFIX, KOHYA_PREFIX, "")
ROLE_SUFFIXES = {
    ".lora_A.weight": "down", ".lora_down.weight": "down",
    ".lora_B.weight": "up", ".lora_up.weight": "up",
    ".alpha": "alpha",
}  # fmt: skip
# diffusers' names for ltx-core's top-level modules (its scripts/convert_ltx2_to_diffusers.py);
# inside the transformer blocks every layer a LoRA adapts keeps ltx-core's name.
DIFFUSERS_MODULE_NAMES = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
}
# The text-encoder side of a LoRA, skipped (module docstring): the connectors, the Gemma feature
# extractor's projection, and diffusers' component holding both.
TEXT_ENCODER_PREFIXES = (*CONNECTOR_PREFIXES, "text_embedding_projection.", "connectors.")
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
FP8_E4M3_MAX = 448.0


@dataclass(frozen=True)
class LoraModule:
    """One adapted layer of a LoRA file, as its header describes it."""

    layout: str  # the key prefix, one of LAYOUT_PREFIXES
    stem: str  # the layer as the file names it, prefix removed
    down: str  # key of A / lora_down, (rank, in)
    up: str  # key of B / lora_up, (out, rank)
    alpha: str | None  # key of the scalar alpha
    metadata_alpha: float | None = None  # diffusers files: alpha from the PEFT config in the metadata

    def describe(self, shapes: Mapping[str, list[int]], extra: str = "") -> str:
        """'<name> (lora_A (4, 32), lora_B (32, 4)<extra>)': its names and shapes in the file."""
        start = len(self.layout + self.stem) + 1
        down, up = (f"{key[start:].removesuffix('.weight')} {tuple(shapes[key])}" for key in (self.down, self.up))
        return f"{self.layout}{self.stem} ({down}, {up}{extra})"


def _shown(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _parse_keys(path: str | Path, shapes: Mapping[str, list[int]]) -> list[LoraModule]:
    """Group a LoRA file's keys into modules, refusing what is not a complete plain LoRA."""
    roles: dict[tuple[str, str], dict[str, str]] = {}
    unknown, repeated = [], []
    for key in shapes:
        suffix = next((s for s in ROLE_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            unknown.append(key)
            continue
        stem = key[: -len(suffix)]
        layout = next(prefix for prefix in LAYOUT_PREFIXES if stem.startswith(prefix))
        found = roles.setdefault((layout, stem[len(layout) :]), {})
        if ROLE_SUFFIXES[suffix] in found:
            repeated.append(stem)  # e.g. lora_A beside lora_down
        found[ROLE_SUFFIXES[suffix]] = key
    if not any("down" in found or "up" in found for found in roles.values()):
        raise CheckpointError(
            f"{path}: no lora_A/lora_B (or lora_down/lora_up) tensors, so it is not a LoRA file. "
            "Pass the LoRA's .safetensors file, not a model checkpoint."
        )
    if unknown:
        raise CheckpointError(
            f"{path}: keys in no known LoRA layout: {_shown(unknown)}. Only plain LoRAs load: lora_A/lora_B "
            "or lora_down/lora_up (+ .alpha) under diffusion_model., model.diffusion_model., transformer., "
            "lora_unet_ or no prefix; convert LyCORIS (LoHa, LoKr), DoRA or full-diff files to a plain LoRA first."
        )
    unpaired = [layout + stem for (layout, stem), found in roles.items() if not ("down" in found and "up" in found)]
    if unpaired:
        raise CheckpointError(
            f"{path}: LoRA modules without both lora_A/lora_B (lora_down/lora_up): {_shown(unpaired)}. "
            "The file is incomplete; re-download or re-export it."
        )
    if repeated:
        raise CheckpointError(
            f"{path}: LoRA modules stored twice (lora_A and lora_down, or lora_B and lora_up): {_shown(repeated)}. "
            "Keep one copy of each."
        )
    return [
        LoraModule(layout, stem, found["down"], found["up"], found.get("alpha"))
        for (layout, stem), found in roles.items()
    ]


def _is_text_encoder_side(module: LoraModule) -> bool:
    if module.layout == KOHYA_PREFIX:
        stem = module.stem.removeprefix(KOHYA_WRAPPER_PREFIX)
        return stem.startswith(tuple(prefix.replace(".", "_") for prefix in TEXT_ENCODER_PREFIXES))
    return module.stem.startswith(TEXT_ENCODER_PREFIXES)


def _kohya_names(module_names: Sequence[str]) -> dict[str, str | None]:
    """kohya's flattened names (with and without musubi-tuner's "model_") -> the model's module
    names. A flattened name two modules share resolves to nothing rather than to either."""
    table: dict[str, str | None] = {}
    for name in module_names:
        flat = name.replace(".", "_")
        for key in (flat, KOHYA_WRAPPER_PREFIX + flat):
            table[key] = name if key not in table else None
    return table


def _model_name(module: LoraModule, kohya_names: Mapping[str, str | None] | None) -> str | None:
    """The model's name for a LoRA module; None for a kohya name when no model is given."""
    if module.layout == KOHYA_PREFIX:
        return None if kohya_names is None else kohya_names.get(module.stem)
    if module.layout == DIFFUSERS_PREFIX:
        head, dot, rest = module.stem.partition(".")
        return DIFFUSERS_MODULE_NAMES.get(head, head) + dot + rest
    return module.stem


def _diffusers_alpha(lora: Checkpoint) -> float | None:
    """lora_alpha of the PEFT config diffusers stores beside its LoRAs; None when absent."""
    path = lora.path
    raw = lora.metadata.get(DIFFUSERS_METADATA_KEY)
    if raw is None:
        return None
    try:
        peft_config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its '{DIFFUSERS_METADATA_KEY}' metadata is not valid JSON ({err}).") from None

    def setting(name: str):  # saved by the pipeline with the component's prefix, by the model without
        return peft_config.get(DIFFUSERS_PREFIX + name, peft_config.get(name))

    unread = [name for name in ("alpha_pattern", "use_rslora") if setting(name)]
    if unread:
        raise CheckpointError(
            f"{path}: its PEFT config sets {', '.join(unread)}, a per-module scaling this loader does not read. "
            "Convert it to a LoRA with an .alpha per module (kohya/ComfyUI format)."
        )
    alpha = setting("lora_alpha")
    return None if alpha is None else float(alpha)


def _lora_modules(lora: Checkpoint, weight_shapes: Mapping[str, tuple[int, int]] | None) -> dict[str, LoraModule]:
    """A LoRA file's modules by the model's module name, checked from the header alone.

    `weight_shapes` ({module: (out, in)} of the model's 2-D weights) checks that every module
    exists with the right shape; without it only the file itself is checked and kohya names
    stay unresolved (keyed by their file name).
    """
    path = lora.path
    shapes = {name: list(entry.shape) for name, entry in lora.entries.items()}
    modules = [module for module in _parse_keys(path, shapes) if not _is_text_encoder_side(module)]
    malformed = [
        module.describe(shapes, f", alpha {tuple(shapes[module.alpha])}" if module.alpha else "")
        for module in modules
        if len(shapes[module.down]) != 2
        or len(shapes[module.up]) != 2
        or shapes[module.down][0] != shapes[module.up][1]
        or (module.alpha is not None and math.prod(shapes[module.alpha]) != 1)
    ]
    if malformed:
        raise CheckpointError(
            f"{path}: LoRA matrices that do not fit together (A rank x in, B out x rank, alpha one number): "
            f"{_shown(malformed)}. The file is damaged or not a plain linear LoRA; re-export it."
        )
    if any(module.layout == DIFFUSERS_PREFIX and module.alpha is None for module in modules):
        alpha = _diffusers_alpha(lora)
        modules = [
            replace(module, metadata_alpha=alpha) if module.layout == DIFFUSERS_PREFIX else module for module in modules
        ]
    kohya_names = None if weight_shapes is None else _kohya_names(list(weight_shapes))
    found, missing, misshapen, repeated = {}, [], [], []
    for module in modules:
        name = _model_name(module, kohya_names)
        if weight_shapes is not None:
            if name not in weight_shapes:
                missing.append(module.layout + module.stem)
                continue
            down, up = shapes[module.down], shapes[module.up]
            if (up[0], down[1]) != weight_shapes[name]:
                misshapen.append(module.describe(shapes, f"; weight {weight_shapes[name]}"))
                continue
        key = module.layout + module.stem if name is None else name
        if key in found:
            repeated.append(key)
        found[key] = module
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
    if repeated:
        raise CheckpointError(f"{path}: LoRA modules stored twice under different names: {_shown(repeated)}. Keep one.")
    return found


def _weight_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(out, in) of every module with a 2-D weight, as a LoRA for it is shaped (unpacked for
    int8/int4 layers)."""
    shapes = {}
    for name, module in model.named_modules():
        if "weight" not in module or module["weight"].ndim != 2:
            continue
        output_dims, input_dims = module["weight"].shape
        if isinstance(module, nn.QuantizedLinear):
            input_dims = input_dims * 32 // module.bits
        shapes[name] = (output_dims, input_dims)
    return shapes


def check_lora_file(path: str | Path | Checkpoint, config: LTXModelConfig | None = None) -> None:
    """Raise CheckpointError (one line, naming the fix) for a LoRA file `apply_loras` would
    refuse, reading only the safetensors header, so a CLI can check before any model loads.

    Without `config`: that it is a LoRA in a known layout, every module paired. With the DiT's
    config (`loader.transformer.transformer_config(checkpoint)`): also that the model has every
    module, with the LoRA's shapes. The model is built lazily for its module names and shapes:
    its parameters are never evaluated, so even the 48-layer DiT costs ~0.1 s and no memory.
    """
    _lora_modules(Checkpoint.open(path), None if config is None else _weight_shapes(LTXModel(config)))


def read_lora(
    path: str | Path | Checkpoint, weight_shapes: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, tuple[mx.array, mx.array, float]]:
    """module -> (A, B, alpha / rank, or 1 without alpha) of a LoRA file, checked as
    `check_lora_file` does (against `weight_shapes`, the model's {module: (out, in)}, if given)."""
    lora = Checkpoint.open(path)
    modules = _lora_modules(lora, weight_shapes)
    tensors = lora.load()
    lora = {}
    for name, module in modules.items():
        down, up = tensors[module.down], tensors[module.up]
        alpha = tensors[module.alpha].item() if module.alpha is not None else module.metadata_alpha
        lora[name] = (down, up, 1.0 if alpha is None else alpha / down.shape[0])
    return lora


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


def fused_weight(
    weight: mx.array, pairs: list[tuple[mx.array, mx.array, float]], fp8: bool, weight_scale: mx.array | None = None
) -> tuple[mx.array, mx.array | None]:
    """A layer's weight (and fp8 scale) with LoRA deltas added: W + delta in W's dtype; for fp8
    weights (e4m3 bytes) the fused bfloat16 weight rounded back to e4m3, and a scaled fp8 weight
    dequantized in float32, fused and re-quantized with a new per-tensor scale."""
    if not fp8:
        return lora_delta(pairs, weight.dtype) + weight, None
    if weight_scale is None:
        return mx.to_fp8(lora_delta(pairs, mx.bfloat16) + mx.from_fp8(weight, dtype=mx.bfloat16)), None
    delta = lora_delta(pairs, mx.bfloat16).astype(mx.float32)
    fused = mx.from_fp8(weight, dtype=mx.float32) * weight_scale + delta
    # torch evaluates `448 / amax` as `amax.reciprocal() * 448`: same rounding here.
    scale = (1.0 / mx.abs(fused).max()) * FP8_E4M3_MAX
    # 1 / scale as a true division: mx.reciprocal may differ by an ulp.
    return mx.to_fp8(mx.clip(fused * scale, -FP8_E4M3_MAX, FP8_E4M3_MAX)), 1.0 / scale


def lora_layers(
    loras: Sequence[tuple[str | Path | Checkpoint, float]], weight_shapes: Mapping[str, tuple[int, int]]
) -> list[dict[str, tuple[str, str, float]]]:
    """Per LoRA file, module -> (key of A, key of B, strength x alpha / rank): every check of
    `read_lora` from the header, alphas read, no matrix read. For reading A and B later, a
    pass at a time (weight streaming)."""
    layers = []
    for path, strength in loras:
        lora = Checkpoint.open(path)
        found = {}
        for name, module in _lora_modules(lora, weight_shapes).items():
            alpha = lora.read_tensor(module.alpha).item() if module.alpha is not None else module.metadata_alpha
            rank = lora.entries[module.down].shape[0]
            found[name] = (module.down, module.up, float(strength) * (1.0 if alpha is None else alpha / rank))
        layers.append(found)
    return layers


def refuse_affine_targets(names, modules: Mapping[str, nn.Module]) -> None:
    affine = sorted(name for name in names if isinstance(modules[name], nn.QuantizedLinear))
    if affine:
        raise ValueError(
            f"cannot fuse LoRAs into int8/int4 layers ({_shown(affine)}): apply_loras before quantize_transformer."
        )


def apply_loras(model: nn.Module, loras: Sequence[tuple[str | Path | Checkpoint, float]]) -> nn.Module:
    """Fuse LoRAs [(path, strength), ...] into `model`'s weights in place and return it.

    Every file is read and checked against the model before any weight changes. As in the
    reference, nothing is fused when all strengths are zero. Fuse before quantizing to
    int8/int4; fp8 (Fp8Linear) layers are fused the way the reference fuses its fp8 weights.
    """
    fuse_lora_pairs(model, lora_pairs(model, loras))
    return model


def fuse_lora_pairs(module: nn.Module, per_module: dict[str, list[tuple[mx.array, mx.array, float]]]) -> None:
    """Fuse {path within `module`: LoRA pairs} into its layers, one layer at a time (the map of
    its modules lives only as long as this call: held longer, it would keep replaced layers)."""
    if not per_module:
        return
    modules = dict(module.named_modules())
    refuse_affine_targets(per_module, modules)
    for name, pairs in per_module.items():
        fuse_into_layer(modules[name], pairs)


def lora_pairs(
    model: nn.Module, loras: Sequence[tuple[str | Path | Checkpoint, float]]
) -> dict[str, list[tuple[mx.array, mx.array, float]]]:
    """{module path: [(down, up, strength x scale), ...]} of every LoRA, each file read and
    checked against the model (lazily: the matrices are read when fused); {} when all
    strengths are zero, as the reference then fuses nothing."""
    loras = [(path, float(strength)) for path, strength in loras]
    weight_shapes = _weight_shapes(model)
    per_module: dict[str, list[tuple[mx.array, mx.array, float]]] = {}
    for path, strength in loras:
        for name, (down, up, scale) in read_lora(path, weight_shapes).items():
            per_module.setdefault(name, []).append((down, up, strength * scale))
    return {} if all(strength == 0 for _, strength in loras) else per_module


def fuse_into_layer(layer: nn.Module, pairs: list[tuple[mx.array, mx.array, float]]) -> None:
    """Fuse (down, up, scale) LoRA pairs into one Linear (or fp8 Linear) in place, evaluated
    now: its LoRA matrices and old weight are freed before the next layer is fused."""
    fp8 = isinstance(layer, Fp8Linear)
    weight, scale = fused_weight(layer.weight, pairs, fp8, layer.get("weight_scale") if fp8 else None)
    layer.weight = weight
    if scale is not None:
        layer.weight_scale = scale
    mx.eval(layer.parameters())

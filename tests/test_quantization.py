"""DiT quantization: fp8 against ltx-core's QuantizationPolicy.fp8_cast() (same downcast layers,
upcast in forward), official-style fp8 checkpoints read straight into fp8, affine int8/int4
against the fp32 reference, and quantized checkpoints saved and reloaded."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.loader.sd_ops import SDOps
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.quantization import QuantizationPolicy
from mlx import nn
from mlx.utils import tree_flatten
from reference import PARITY_FIGURES, assert_cosine, assert_matches, prefixed, save_checkpoint
from transformer_fixtures import (
    MIXED_STG,
    build_reference_transformer,
    perturbation_configs,
    reference_modalities,
    save_transformer_checkpoint,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import CheckpointError, load_transformer, read_config
from LTX_2_MLX.quantization import (
    Fp8Linear,
    is_fp8_cast_target,
    load_fp8_transformer,
    load_quantized_transformer,
    parameter_bytes,
    quantize_transformer,
    quantized_layers,
    save_quantized_transformer,
)

PREFIX = "model.diffusion_model."


def quantization_sized_config() -> dict:
    """The tiny LTX-2.0 audio-video DiT at width 64 (2 heads of 32) for both streams, so every
    block Linear's input width is a multiple of the group size 64."""
    config = tiny_transformer_config("2.0")
    config["transformer"].update(
        attention_head_dim=32, audio_attention_head_dim=32, cross_attention_dim=64, audio_cross_attention_dim=64
    )
    return config


@pytest.fixture(scope="module")
def fp8_setup(tmp_path_factory):
    """A tiny LTX-2.3 DiT (gated attention: gates are not downcast) in fp32, and the reference
    built with fp8_cast: TRANSFORMER_LINEAR_DOWNCAST_MAP on load, UPCAST_DURING_INFERENCE."""
    folder = tmp_path_factory.mktemp("fp8")
    config = tiny_transformer_config("2.3")
    checkpoint = save_transformer_checkpoint(
        folder / "dit.safetensors", build_reference_transformer(config, audio=True, seed=21), config
    )
    policy = QuantizationPolicy.fp8_cast()
    reference = SingleGPUModelBuilder(
        model_class_configurator=LTXModelConfigurator,
        model_path=checkpoint,
        model_sd_ops=SDOps("chain", (*LTXV_MODEL_COMFY_RENAMING_MAP.mapping, *policy.sd_ops.mapping)),
        module_ops=policy.module_ops,
    ).build(torch.device("cpu"))
    return dict(config=config, checkpoint=checkpoint, reference=reference, folder=folder)  # noqa: C408


@pytest.fixture(scope="module")
def affine_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("affine")
    config = quantization_sized_config()
    reference = build_reference_transformer(config, audio=True, seed=22)
    checkpoint = save_transformer_checkpoint(folder / "dit.safetensors", reference, config)
    return dict(config=config, checkpoint=checkpoint, reference=reference, folder=folder)  # noqa: C408


def run_both(config, reference, model, dtype=mx.float32):
    video, audio = reference_modalities(config, batch=len(MIXED_STG))
    ref_perturbations, perturbations = perturbation_configs(MIXED_STG)
    with torch.no_grad():
        expected = reference(video, audio, ref_perturbations)
    return expected, model(to_mlx_modality(video, dtype), to_mlx_modality(audio, dtype), perturbations)


def fp8_bytes(tensor: torch.Tensor) -> np.ndarray:
    return tensor.view(torch.uint8).numpy()


def check_fp8_layers_match_reference(model, reference, same_bytes: bool = True):
    """Our Fp8Linear layers are exactly the reference's float8 ones, with the same bytes
    when both were rounded from the same float32 weights."""
    state = reference.state_dict()
    reference_fp8 = sorted(k.removesuffix(".weight") for k, v in state.items() if v.dtype == torch.float8_e4m3fn and k.endswith(".weight"))  # fmt: skip
    assert quantized_layers(model) == reference_fp8 and len(reference_fp8) > 0
    modules = dict(model.named_modules())
    for name in reference_fp8:
        assert isinstance(modules[name], Fp8Linear) and modules[name].weight.dtype == mx.uint8
        if not same_bytes:
            continue
        np.testing.assert_array_equal(np.array(modules[name].weight), fp8_bytes(state[f"{name}.weight"]), err_msg=name)
        np.testing.assert_array_equal(np.array(modules[name].bias), fp8_bytes(state[f"{name}.bias"]), err_msg=name)
    gates = [name for name in modules if name.endswith("to_gate_logits")]
    assert gates and all(isinstance(modules[name], nn.Linear) for name in gates)  # kept in float, as the reference


def test_fp8_matches_reference_fp8_cast_fp32(fp8_setup):
    model = quantize_transformer(load_transformer(fp8_setup["checkpoint"], dtype=mx.float32), "fp8")
    check_fp8_layers_match_reference(model, fp8_setup["reference"])
    (ref_video, ref_audio), (video, audio) = run_both(fp8_setup["config"], fp8_setup["reference"], model)
    assert_matches("fp8_cast fp32 video velocity", video, ref_video)
    assert_matches("fp8_cast fp32 audio velocity", audio, ref_audio)


def test_fp8_bf16_close_to_reference_fp8_cast(fp8_setup):
    model = quantize_transformer(load_transformer(fp8_setup["checkpoint"], dtype=mx.bfloat16), "fp8")
    # fp32 -> bf16 -> e4m3 is a double rounding, so a few bytes differ from fp32 -> e4m3.
    check_fp8_layers_match_reference(model, fp8_setup["reference"], same_bytes=False)
    (ref_video, ref_audio), (video, audio) = run_both(fp8_setup["config"], fp8_setup["reference"], model, mx.bfloat16)
    assert video.dtype == mx.bfloat16
    assert_cosine("fp8_cast bf16 video velocity", video, ref_video)
    assert_cosine("fp8_cast bf16 audio velocity", audio, ref_audio)


def test_fp8_checkpoint_loads_straight_into_fp8(fp8_setup):
    """A file holding the downcast weights as F8_E4M3 (like the official *-fp8 files) is read
    into Fp8Linear layers with the file's bytes, not decoded to a float dtype first."""
    state = fp8_setup["reference"].state_dict()
    path = save_checkpoint(fp8_setup["folder"] / "dit-fp8.safetensors", prefixed(PREFIX, state), fp8_setup["config"])
    model = load_fp8_transformer(path, dtype=mx.float32)
    check_fp8_layers_match_reference(model, fp8_setup["reference"])
    (ref_video, ref_audio), (video, audio) = run_both(fp8_setup["config"], fp8_setup["reference"], model)
    assert_matches("fp8 checkpoint fp32 video velocity", video, ref_video)
    assert_matches("fp8 checkpoint fp32 audio velocity", audio, ref_audio)


def test_scaled_fp8_checkpoint_applies_weight_scale(fp8_setup, affine_setup):
    """Per-tensor scaled fp8 (weight = e4m3 x weight_scale; input_scale dropped): against a
    reference whose weights are those dequantized values in fp32."""
    config, reference = affine_setup["config"], affine_setup["reference"]
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    tensors, dequantized = dict(state), dict(state)
    for key, weight in state.items():
        layer = key.removesuffix(".weight")
        if not (key.endswith(".weight") and is_fp8_cast_target(layer)):
            continue
        scale = weight.abs().max() / 448.0
        quantized = (weight / scale).to(torch.float8_e4m3fn)
        tensors[key], tensors[f"{layer}.weight_scale"] = quantized, scale.reshape(())
        tensors[f"{layer}.input_scale"] = torch.tensor(0.02)
        dequantized[key] = quantized.float() * scale
    path = save_checkpoint(affine_setup["folder"] / "dit-scaled-fp8.safetensors", prefixed(PREFIX, tensors), config)
    scaled_reference = build_reference_transformer(config, audio=True, seed=0)
    scaled_reference.load_state_dict(dequantized)
    model = load_fp8_transformer(path, dtype=mx.float32)
    layers = quantized_layers(model)
    assert layers and all("weight_scale" in dict(model.named_modules())[name] for name in layers)
    (ref_video, ref_audio), (video, audio) = run_both(config, scaled_reference, model)
    assert_matches("scaled fp8 checkpoint fp32 video velocity", video, ref_video)
    assert_matches("scaled fp8 checkpoint fp32 audio velocity", audio, ref_audio)


def expected_quantized_bytes(float_model, paths: list[str], bits: int | None) -> int:
    """Parameter bytes after replacing `paths`' float weights (and biases) by their quantized form."""
    modules = dict(float_model.named_modules())
    total = parameter_bytes(float_model)
    for path in paths:
        output_dims, input_dims = modules[path].weight.shape
        itemsize = modules[path].weight.itemsize
        total -= itemsize * output_dims * (input_dims + 1)
        if bits is None:  # fp8: one byte per weight and bias element
            total += output_dims * (input_dims + 1)
        else:  # packed weights, a scale and an offset per group of 64 and the bias, in the float dtype
            total += output_dims * input_dims * bits // 8 + itemsize * output_dims * (2 * (input_dims // 64) + 1)
    return total


DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16}


@pytest.mark.parametrize(
    "mode, dtype, minimum",
    [("int8", "fp32", 0.999), ("int4", "fp32", 0.99), ("int8", "bf16", 0.999), ("int4", "bf16", 0.99)],
)
def test_affine_quantization_close_to_reference_fp32(affine_setup, mode, dtype, minimum):
    float_model = load_transformer(affine_setup["checkpoint"], dtype=DTYPES[dtype])
    targets = sorted(path for path, module in float_model.named_modules() if is_fp8_cast_target(path))
    model = quantize_transformer(load_transformer(affine_setup["checkpoint"], dtype=DTYPES[dtype]), mode)
    assert quantized_layers(model) == targets and len(targets) == 2 * (6 * 4 + 2 * 2)  # per block: 6 attentions, 2 ff
    modules = dict(model.named_modules())
    assert all(isinstance(modules[p], nn.QuantizedLinear) and modules[p].bits == int(mode[3:]) for p in targets)
    assert isinstance(model.proj_out, nn.Linear) and isinstance(model.adaln_single.linear, nn.Linear)
    assert parameter_bytes(model) == expected_quantized_bytes(float_model, targets, int(mode[3:]))
    ratio = parameter_bytes(model) / parameter_bytes(float_model)
    PARITY_FIGURES.append((f"{mode} parameter bytes / {dtype} (tiny model)", "ratio", ratio))
    (ref_video, ref_audio), (video, audio) = run_both(
        affine_setup["config"], affine_setup["reference"], model, DTYPES[dtype]
    )
    assert_cosine(f"{mode} {dtype} video velocity vs fp32 reference", video, ref_video, minimum)
    assert_cosine(f"{mode} {dtype} audio velocity vs fp32 reference", audio, ref_audio, minimum)


def test_fp8_memory_is_one_byte_per_quantized_element(affine_setup):
    float_model = load_transformer(affine_setup["checkpoint"], dtype=mx.bfloat16)
    model = quantize_transformer(load_transformer(affine_setup["checkpoint"], dtype=mx.bfloat16), "fp8")
    assert parameter_bytes(model) == expected_quantized_bytes(float_model, quantized_layers(model), None)
    ratio = parameter_bytes(model) / parameter_bytes(float_model)
    PARITY_FIGURES.append(("fp8 parameter bytes / bf16 (tiny model)", "ratio", ratio))


@pytest.mark.parametrize("mode", ["int4", "fp8"])
def test_quantized_checkpoint_reloads_identically(affine_setup, mode):
    model = quantize_transformer(load_transformer(affine_setup["checkpoint"], dtype=mx.bfloat16), mode)
    path = affine_setup["folder"] / f"dit-{mode}.safetensors"
    save_quantized_transformer(model, path, affine_setup["checkpoint"])
    assert read_config(path) == affine_setup["config"]
    reloaded = load_quantized_transformer(path)
    assert quantized_layers(reloaded) == quantized_layers(model)
    assert reloaded.quantization == model.quantization and reloaded.config == model.config
    saved, loaded = dict(tree_flatten(model.parameters())), dict(tree_flatten(reloaded.parameters()))
    assert sorted(saved) == sorted(loaded)
    for key, value in saved.items():
        assert loaded[key].dtype == value.dtype, key
        assert mx.array_equal(loaded[key], value).item(), key
    video, audio = reference_modalities(affine_setup["config"], batch=1)
    inputs = (to_mlx_modality(video, mx.bfloat16), to_mlx_modality(audio, mx.bfloat16))
    for before, after in zip(model(*inputs), reloaded(*inputs)):
        assert mx.array_equal(before, after).item()


def test_quantization_refusals(affine_setup):
    model = load_transformer(affine_setup["checkpoint"], dtype=mx.float32)
    with pytest.raises(ValueError, match=r"'int3' is not one of fp8, int8, int4"):
        quantize_transformer(model, "int3")
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized_transformer(model, affine_setup["folder"] / "x.safetensors", affine_setup["checkpoint"])
    quantize_transformer(model, "int8")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_transformer(model, "int4")
    with pytest.raises(CheckpointError, match="not a quantized LTX_2_MLX checkpoint"):
        load_quantized_transformer(affine_setup["checkpoint"])
    with pytest.raises(CheckpointError, match="no Linear weight of its transformer is stored as F8_E4M3"):
        load_fp8_transformer(affine_setup["checkpoint"])

"""Lightricks' official fp8 checkpoints (ltx-2-19b-{dev,distilled}-fp8.safetensors) read by
load_transformer_as_stored (what the model ledger loads the DiT with), on a tiny file written in
their layout.

The real files hold 6,404 tensors (TensorRT-LLM's LTX_2_CHECKPOINT_FORMAT.md): 5,920 under
model.diffusion_model., i.e. the bf16 DiT's 3,510 plus the text connectors' 2 x 29, plus 2,352 =
2 x 28 x 42 companions: a float32 scalar `weight_scale` and `input_scale` beside each of the 28
block Linears of blocks 1-42 (ltx-core 1.0's fp8_scaled_mm leaves blocks 0 and 43-47 out). Those
Linears' weights are F8_E4M3 in [out, in] layout; every other tensor is bf16. The metadata
carries `config`, `_quantization_metadata` ({"format_version", "layers": {name: {"format"}}}),
`license` and `encrypted_wandb_properties`.
"""

import json

import ltx_core.loader  # noqa: F401  (before ltx_core.quantization, which cannot be imported first)
import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
from ltx_core.quantization.fp8_scaled_mm import EXCLUDED_LAYER_SUBSTRINGS, quantize_weight_to_fp8_per_tensor
from ltx_core.text_encoders.gemma.embeddings_connector import (
    AudioEmbeddings1DConnectorConfigurator,
    Embeddings1DConnectorConfigurator,
)
from mlx import nn
from mlx.utils import tree_flatten
from reference import assert_cosine, assert_matches, prefixed
from safetensors.torch import save_file
from transformer_fixtures import (
    MIXED_STG,
    build_reference_transformer,
    perturbation_configs,
    reference_modalities,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import CheckpointError
from LTX_2_MLX.quantization import Fp8Linear, load_transformer_as_stored, quantized_layers

PREFIX = "model.diffusion_model."
NUM_LAYERS = 4  # blocks 1 and 2 in fp8; 0 and 3 in bf16, as 0 and 43-47 of 48 in the real files
LINEARS_PER_BLOCK = 28  # LTX-2.0: 6 attentions x (to_q, to_k, to_v, to_out.0) + 2 feed-forwards x 2
# Tensors of the other parts of the file (names as in the real one), which the DiT loader skips.
OTHER_PARTS = (
    "model.diffusion_model.video_embeddings_connector.learnable_registers",
    "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight",
    "vae.per_channel_statistics.mean-of-means",
    "audio_vae.per_channel_statistics.std-of-means",
    "vocoder.conv_pre.weight",
    "text_embedding_projection.aggregate_embed.weight",
)


def is_fp8_layer(name: str, module: torch.nn.Module) -> bool:
    if not isinstance(module, torch.nn.Linear) or not name.startswith("transformer_blocks."):
        return False
    return 0 < int(name.split(".")[1]) < NUM_LAYERS - 1


@pytest.fixture(scope="module")
def official_fp8(tmp_path_factory):
    """The tensors and metadata of a tiny official-layout fp8 file, and an fp32 reference whose
    weights are exactly the values the file stores (fp8 ones dequantized, bf16 ones widened)."""
    config = tiny_transformer_config("2.0")
    config["transformer"]["num_layers"] = NUM_LAYERS
    reference = build_reference_transformer(config, audio=True, seed=31)
    layers = sorted(name for name, module in reference.named_modules() if is_fp8_layer(name, module))
    assert len(layers) == LINEARS_PER_BLOCK * (NUM_LAYERS - 2)
    tensors = {key: value.to(torch.bfloat16) for key, value in reference.state_dict().items()}
    for index, layer in enumerate(layers):
        # ltx-core's own per-tensor quantizer; it returns the weight transposed for cuBLAS,
        # the files store it [out, in].
        quantized, scale = quantize_weight_to_fp8_per_tensor(reference.get_submodule(layer).weight.detach())
        tensors[f"{layer}.weight"] = quantized.t().contiguous()
        tensors[f"{layer}.weight_scale"] = scale.float().reshape(())
        tensors[f"{layer}.input_scale"] = torch.tensor(0.01 * (index + 1), dtype=torch.float32)
    dequantized = {
        key: value.float() * tensors[key.removesuffix("weight") + "weight_scale"]
        if value.dtype == torch.float8_e4m3fn
        else value.float()
        for key, value in tensors.items()
        if not key.endswith("_scale")
    }
    reference.load_state_dict(dequantized)
    tensors = prefixed(PREFIX, tensors)
    tensors.update({key: torch.randn(4, 8).to(torch.bfloat16) for key in OTHER_PARTS})
    metadata = {
        "config": json.dumps(config),
        "_quantization_metadata": json.dumps(
            {"format_version": "1.0", "layers": {PREFIX + layer: {"format": "float8_e4m3fn"} for layer in layers}}
        ),
        "license": "LTX-2 Community License (stand-in)",
        "encrypted_wandb_properties": "stand-in",
    }
    folder = tmp_path_factory.mktemp("fp8_official")
    return dict(config=config, reference=reference, layers=layers, tensors=tensors, metadata=metadata, folder=folder)  # noqa: C408


def write(setup, name: str, tensors=None, metadata=None) -> str:
    path = setup["folder"] / f"{name}.safetensors"
    save_file(tensors or setup["tensors"], str(path), metadata=metadata or setup["metadata"])
    return str(path)


def run_both(setup, model, dtype):
    config = setup["config"]
    video, audio = reference_modalities(config, batch=len(MIXED_STG))
    ref_perturbations, perturbations = perturbation_configs(MIXED_STG)
    with torch.no_grad():
        expected = setup["reference"](video, audio, ref_perturbations)
    return expected, model(to_mlx_modality(video, dtype), to_mlx_modality(audio, dtype), perturbations)


def test_real_file_tensor_count_is_the_bf16_dit_plus_two_scales_per_fp8_linear():
    """The 5,920 model.diffusion_model. tensors of the real files, from ltx-core's own modules
    (on the meta device): the 48-block LTX-2.0 DiT, both text connectors, and a weight_scale and
    an input_scale for each Linear that ltx-core 1.0's fp8_scaled_mm swaps to FP8Linear."""
    config = tiny_transformer_config("2.0")
    config["transformer"].update(num_layers=48, connector_num_attention_heads=2, connector_attention_head_dim=8)
    with torch.device("meta"):
        dit = LTXModelConfigurator.from_config(config)
        connectors = [Embeddings1DConnectorConfigurator.from_config(config)]
        connectors.append(AudioEmbeddings1DConnectorConfigurator.from_config(config))
    scaled = [
        name
        for name, module in dit.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in name for part in EXCLUDED_LAYER_SUBSTRINGS)
    ]
    assert sorted({int(name.split(".")[1]) for name in scaled}) == list(range(1, 43))
    assert len(scaled) == LINEARS_PER_BLOCK * 42
    dit_tensors = len(dit.state_dict()) + sum(len(connector.state_dict()) for connector in connectors)
    assert (dit_tensors, dit_tensors + 2 * len(scaled)) == (3568, 5920)


def test_official_fp8_file_matches_reference_with_dequantized_weights_fp32(official_fp8):
    model = load_transformer_as_stored(write(official_fp8, "official"), dtype=mx.float32)
    assert quantized_layers(model) == official_fp8["layers"]
    modules = dict(model.named_modules())
    for layer in official_fp8["layers"]:
        stored = official_fp8["tensors"][PREFIX + layer + ".weight"]
        assert isinstance(modules[layer], Fp8Linear) and modules[layer].weight.dtype == mx.uint8
        np.testing.assert_array_equal(np.array(modules[layer].weight), stored.view(torch.uint8).numpy(), err_msg=layer)
        assert modules[layer].weight_scale.item() == official_fp8["tensors"][PREFIX + layer + ".weight_scale"].item()
        assert "input_scale" not in modules[layer]
    assert isinstance(modules["transformer_blocks.0.attn1.to_q"], nn.Linear)
    assert isinstance(modules[f"transformer_blocks.{NUM_LAYERS - 1}.ff.net.2"], nn.Linear)
    (ref_video, ref_audio), (video, audio) = run_both(official_fp8, model, mx.float32)
    assert_matches("official fp8 layout fp32 video velocity", video, ref_video, tol=1e-4)
    assert_matches("official fp8 layout fp32 audio velocity", audio, ref_audio, tol=1e-4)


def test_official_fp8_file_bf16_close_to_reference(official_fp8):
    model = load_transformer_as_stored(write(official_fp8, "official-bf16"), dtype=mx.bfloat16)
    (ref_video, ref_audio), (video, audio) = run_both(official_fp8, model, mx.bfloat16)
    assert video.dtype == mx.bfloat16
    assert_cosine("official fp8 layout bf16 video velocity", video, ref_video)
    assert_cosine("official fp8 layout bf16 audio velocity", audio, ref_audio)


def comfy_marker(fmt: str) -> torch.Tensor:
    return torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)


def test_comfy_quant_markers_load_like_the_official_file(official_fp8):
    """ComfyUI's layout: the per-layer format marker as a U8 `.comfy_quant` tensor."""
    tensors = dict(official_fp8["tensors"])
    tensors.update({f"{PREFIX}{layer}.comfy_quant": comfy_marker("float8_e4m3fn") for layer in official_fp8["layers"]})
    marked = load_transformer_as_stored(write(official_fp8, "comfy", tensors), dtype=mx.float32)
    official = load_transformer_as_stored(write(official_fp8, "official-again"), dtype=mx.float32)
    assert quantized_layers(marked) == quantized_layers(official)
    expected, actual = dict(tree_flatten(official.parameters())), dict(tree_flatten(marked.parameters()))
    assert sorted(actual) == sorted(expected)
    assert all(mx.array_equal(actual[key], value).item() for key, value in expected.items())


def scale_on_bf16_layer(tensors, metadata):
    tensors[PREFIX + "transformer_blocks.0.attn1.to_q.weight_scale"] = torch.tensor(0.5)
    return "transformer_blocks.0.attn1.to_q.weight_scale"


def unknown_companion(tensors, metadata):
    tensors[PREFIX + "transformer_blocks.1.attn1.to_q.weight_scale_2"] = torch.tensor(0.5)
    return "transformer_blocks.1.attn1.to_q.weight_scale_2"


def per_channel_scale(tensors, metadata):
    key = PREFIX + "transformer_blocks.1.attn1.to_k.weight_scale"
    tensors[key] = tensors[key].reshape(1).repeat(tensors[key.removesuffix("_scale")].shape[0])
    return "transformer_blocks.1.attn1.to_k.weight_scale"


def int8_marker(tensors, metadata):
    tensors[PREFIX + "transformer_blocks.2.ff.net.2.comfy_quant"] = comfy_marker("int8_tensorwise")
    return "transformer_blocks.2.ff.net.2 is 'int8_tensorwise'"


def metadata_lists_bf16_layer(tensors, metadata):
    listed = json.loads(metadata["_quantization_metadata"])
    listed["layers"][PREFIX + "transformer_blocks.3.attn2.to_v"] = {"format": "float8_e4m3fn"}
    metadata["_quantization_metadata"] = json.dumps(listed)
    return "transformer_blocks.3.attn2.to_v"


def metadata_other_format(tensors, metadata):
    listed = json.loads(metadata["_quantization_metadata"])
    listed["layers"][PREFIX + "transformer_blocks.1.ff.net.0.proj"] = {"format": "nvfp4"}
    metadata["_quantization_metadata"] = json.dumps(listed)
    return "transformer_blocks.1.ff.net.0.proj is 'nvfp4'"


@pytest.mark.parametrize(
    "damage",
    [
        unknown_companion,
        scale_on_bf16_layer,
        per_channel_scale,
        int8_marker,
        metadata_lists_bf16_layer,
        metadata_other_format,
    ],
)
def test_unknown_fp8_layout_is_refused_naming_the_tensor(official_fp8, damage):
    tensors, metadata = dict(official_fp8["tensors"]), dict(official_fp8["metadata"])
    named = damage(tensors, metadata)
    with pytest.raises(CheckpointError) as refusal:
        load_transformer_as_stored(write(official_fp8, damage.__name__, tensors, metadata), dtype=mx.float32)
    message = str(refusal.value)
    assert named in message and "\n" not in message, message

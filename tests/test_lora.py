"""LoRA fusion against ltx-core's SingleGPUModelBuilder + apply_loras: two seeded ComfyUI-style
LoRAs of different ranks and strengths on a tiny bf16 checkpoint, fused in float32, bfloat16
and into fp8_cast weights; and the refusals for LoRAs that do not fit the model."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.loader.fuse_loras import apply_loras as reference_apply_loras
from ltx_core.loader.primitives import LoraPathStrengthAndSDOps, LoraStateDictWithStrength, StateDict
from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP, SDOps
from ltx_core.loader.sft_loader import SafetensorsStateDictLoader
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
from ltx_core.quantization import QuantizationPolicy
from mlx.utils import tree_flatten
from reference import assert_cosine, assert_matches, prefixed, save_checkpoint
from transformer_fixtures import (
    MIXED_STG,
    build_reference_transformer,
    perturbation_configs,
    reference_modalities,
    tiny_transformer_config,
    to_mlx_modality,
)

from LTX_2_MLX.loader import CheckpointError, load_transformer
from LTX_2_MLX.loader.lora import apply_loras
from LTX_2_MLX.quantization import Fp8Linear, load_fp8_transformer, quantize_transformer

# module -> rank, per LoRA; both cover attention (video, audio, cross-modal) and feed-forward
# layers, and overlap on two modules so their deltas are summed there.
LORA_MODULES = [
    {
        "transformer_blocks.0.attn1.to_q": 4, "transformer_blocks.0.attn1.to_k": 4,
        "transformer_blocks.0.attn1.to_v": 4, "transformer_blocks.0.attn1.to_out.0": 4,
        "transformer_blocks.1.attn2.to_k": 4, "transformer_blocks.1.audio_attn1.to_q": 4,
        "transformer_blocks.1.audio_to_video_attn.to_v": 4, "transformer_blocks.0.ff.net.0.proj": 4,
        "transformer_blocks.0.ff.net.2": 4, "transformer_blocks.1.audio_ff.net.0.proj": 4,
    },
    {
        "transformer_blocks.0.attn1.to_q": 2, "transformer_blocks.0.ff.net.2": 2,
        "transformer_blocks.1.video_to_audio_attn.to_out.0": 2, "transformer_blocks.1.ff.net.2": 2,
    },
]  # fmt: skip
STRENGTHS = [0.8, -0.6]
PREFIX = "model.diffusion_model."


def make_lora(reference_state: dict, modules: dict, seed: int, dtype=torch.float32, alpha: bool = False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, rank in modules.items():
        out_dims, in_dims = reference_state[f"{module}.weight"].shape
        tensors[f"diffusion_model.{module}.lora_A.weight"] = (torch.randn(rank, in_dims, generator=gen) * 0.3).to(dtype)
        tensors[f"diffusion_model.{module}.lora_B.weight"] = (torch.randn(out_dims, rank, generator=gen) * 0.3).to(
            dtype
        )
        if alpha:  # ignored by the reference's fusion, so by ours
            tensors[f"diffusion_model.{module}.alpha"] = torch.tensor(float(rank * 4))
    return tensors


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny LTX-2.0 audio-video DiT saved in bf16 (the reference fuses only into bf16/fp8
    weights) and in fp32, and two LoRA files in fp32 and in bf16."""
    folder = tmp_path_factory.mktemp("lora")
    config = tiny_transformer_config("2.0")
    model = build_reference_transformer(config, audio=True, seed=11)
    state = model.state_dict()
    checkpoint = save_checkpoint(
        folder / "dit-bf16.safetensors", prefixed("model.diffusion_model.", {k: v.bfloat16() for k, v in state.items()}),
        config,
    )  # fmt: skip
    checkpoint_fp32 = save_checkpoint(folder / "dit.safetensors", prefixed("model.diffusion_model.", state), config)
    loras = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        loras[name] = [
            save_checkpoint(
                folder / f"lora{i}-{name}.safetensors", make_lora(state, modules, 100 + i, dtype, i == 0), None
            )
            for i, modules in enumerate(LORA_MODULES)
        ]
    return {"config": config, "state": state, "checkpoint": checkpoint, "checkpoint_fp32": checkpoint_fp32,
            "loras": loras, "folder": folder}  # fmt: skip


def reference_builder(path: str, lora_paths: list[str], **kwargs) -> SingleGPUModelBuilder:
    loras = tuple(LoraPathStrengthAndSDOps(p, s, LTXV_LORA_COMFY_RENAMING_MAP) for p, s in zip(lora_paths, STRENGTHS))
    return SingleGPUModelBuilder(
        model_class_configurator=LTXModelConfigurator, model_path=path,
        model_sd_ops=kwargs.pop("model_sd_ops", LTXV_MODEL_COMFY_RENAMING_MAP), loras=loras, **kwargs,
    )  # fmt: skip


def run_both(config, reference, model, dtype=mx.float32):
    video, audio = reference_modalities(config, batch=len(MIXED_STG))
    ref_perturbations, perturbations = perturbation_configs(MIXED_STG)
    with torch.no_grad():
        expected = reference(video, audio, ref_perturbations)
    actual = model(to_mlx_modality(video, dtype), to_mlx_modality(audio, dtype), perturbations)
    return expected, actual


def lora_weights(params: dict, reference: torch.nn.Module):
    """(ours, reference) weights of every LoRA target, flattened and concatenated."""
    state = reference.state_dict()
    names = sorted({f"{m}.weight" for modules in LORA_MODULES for m in modules})
    ours = np.concatenate([np.array(params[n].astype(mx.float32)).ravel() for n in names])
    theirs = np.concatenate([state[n].float().numpy().ravel() for n in names])
    return ours, theirs


def test_lora_fusion_matches_reference_fp32(setup):
    reference = reference_builder(setup["checkpoint"], setup["loras"]["fp32"]).build(torch.device("cpu"), torch.float32)
    model = apply_loras(load_transformer(setup["checkpoint"], dtype=mx.float32), zip(setup["loras"]["fp32"], STRENGTHS))
    params = dict(tree_flatten(model.parameters()))
    ours, theirs = lora_weights(params, reference)
    unfused, _ = lora_weights(
        dict(tree_flatten(load_transformer(setup["checkpoint"], mx.float32).parameters())), reference
    )
    assert np.abs(theirs - unfused).max() > 0.1  # the LoRAs really change the weights
    assert_matches("lora fused weights fp32", ours, theirs)
    untouched = [k for k in reference.state_dict() if k not in {f"{m}.weight" for d in LORA_MODULES for m in d}]
    for key in untouched:
        np.testing.assert_array_equal(np.array(params[key]), reference.state_dict()[key].float().numpy(), err_msg=key)
    # The builder leaves the weights no LoRA touches in the checkpoint's dtype (bf16) whatever
    # `dtype` asks (apply_loras writes into the loaded state dict): run it uniformly in fp32.
    (ref_video, ref_audio), (video, audio) = run_both(setup["config"], reference.float(), model)
    assert_matches("lora fused model fp32 video velocity", video, ref_video)
    assert_matches("lora fused model fp32 audio velocity", audio, ref_audio)


def test_lora_fusion_bf16_close_to_reference(setup):
    reference = reference_builder(setup["checkpoint"], setup["loras"]["bf16"]).build(
        torch.device("cpu"), torch.bfloat16
    )
    model = apply_loras(
        load_transformer(setup["checkpoint"], dtype=mx.bfloat16), zip(setup["loras"]["bf16"], STRENGTHS)
    )
    ours, theirs = lora_weights(dict(tree_flatten(model.parameters())), reference)
    # Same roundings as torch (scalar product and matmul in float32, each rounded once): bit-exact.
    assert_matches("lora fused weights bf16", ours, theirs, tol=0.0)
    (ref_video, ref_audio), (video, audio) = run_both(setup["config"], reference.float(), model, mx.bfloat16)
    assert_cosine("lora fused model bf16 video velocity", video, ref_video)
    assert_cosine("lora fused model bf16 audio velocity", audio, ref_audio)


def test_lora_fusion_into_fp8_cast_matches_reference(setup):
    """fp8_cast downcasts first and fuses into the fp8 weights (bf16 sum, rounded back to e4m3)."""
    policy = QuantizationPolicy.fp8_cast()
    sd_ops = SDOps("chain", (*LTXV_MODEL_COMFY_RENAMING_MAP.mapping, *policy.sd_ops.mapping))
    reference = reference_builder(
        setup["checkpoint_fp32"], setup["loras"]["fp32"], model_sd_ops=sd_ops, module_ops=policy.module_ops
    ).build(torch.device("cpu"))
    model = quantize_transformer(load_transformer(setup["checkpoint_fp32"], dtype=mx.float32), "fp8")
    apply_loras(model, zip(setup["loras"]["fp32"], STRENGTHS))
    modules = dict(model.named_modules())
    state = reference.state_dict()
    for name in sorted({m for d in LORA_MODULES for m in d}):
        assert isinstance(modules[name], Fp8Linear) and state[f"{name}.weight"].dtype == torch.float8_e4m3fn
        np.testing.assert_array_equal(
            np.array(modules[name].weight), state[f"{name}.weight"].view(torch.uint8).numpy(), err_msg=name
        )
    (ref_video, ref_audio), (video, audio) = run_both(setup["config"], reference, model)
    assert_matches("lora fused into fp8_cast fp32 video velocity", video, ref_video)
    assert_matches("lora fused into fp8_cast fp32 audio velocity", audio, ref_audio)


def save_lora(setup, name: str, tensors: dict) -> str:
    return save_checkpoint(setup["folder"] / f"{name}.safetensors", tensors, None)


def test_lora_for_missing_modules_is_refused_before_any_change(setup):
    state = setup["state"]
    good = make_lora(state, {"transformer_blocks.0.attn1.to_q": 2}, 1)
    foreign = {
        **good,
        "diffusion_model.transformer_blocks.2.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
        "diffusion_model.transformer_blocks.2.attn1.to_q.lora_B.weight": torch.zeros(32, 2),
        "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_A.weight": torch.zeros(2, 32),
        "diffusion_model.transformer_blocks.0.attn1.to_gate_logits.lora_B.weight": torch.zeros(2, 2),
    }
    model = load_transformer(setup["checkpoint"], dtype=mx.float32)
    before = np.array(model.transformer_blocks[0].attn1.to_q.weight)
    with pytest.raises(CheckpointError, match=r"transformer_blocks\.0\.attn1\.to_gate_logits.*transformer_blocks\.2"):
        apply_loras(model, [(save_lora(setup, "good", good), 1.0), (save_lora(setup, "foreign", foreign), 1.0)])
    np.testing.assert_array_equal(np.array(model.transformer_blocks[0].attn1.to_q.weight), before)


def test_lora_with_wrong_shapes_is_refused(setup):
    tensors = make_lora(setup["state"], {"transformer_blocks.1.ff.net.2": 3}, 2)
    tensors["diffusion_model.transformer_blocks.1.ff.net.2.lora_A.weight"] = torch.zeros(3, 64)
    model = load_transformer(setup["checkpoint"], dtype=mx.float32)
    with pytest.raises(CheckpointError, match=r"transformer_blocks\.1\.ff\.net\.2 \(lora_A \(3, 64\).*\(32, 128\)"):
        apply_loras(model, [(save_lora(setup, "misshapen", tensors), 1.0)])


def test_lora_malformed_files_are_refused(setup):
    tensors = make_lora(setup["state"], {"transformer_blocks.1.ff.net.2": 3}, 3)
    unpaired = {k: v for k, v in tensors.items() if "lora_B" not in k}
    other_format = {k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"): v for k, v in tensors.items()}
    model = load_transformer(setup["checkpoint"], dtype=mx.float32)
    with pytest.raises(CheckpointError, match=r"only one of lora_A/lora_B: transformer_blocks\.1\.ff\.net\.2"):
        apply_loras(model, [(save_lora(setup, "unpaired", unpaired), 1.0)])
    with pytest.raises(CheckpointError, match=r"not LoRA A/B matrices: transformer_blocks\.1\.ff\.net\.2\.lora_down"):
        apply_loras(model, [(save_lora(setup, "lora_down", other_format), 1.0)])


def test_lora_text_connector_keys_are_skipped_like_the_reference(setup):
    """The reference fuses connector keys into the DiT's state dict and then drops them."""
    state = setup["state"]
    tensors = {
        **make_lora(state, {"transformer_blocks.0.attn1.to_q": 2}, 4),
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 7),
        "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.lora_B.weight": torch.ones(7, 2),
    }
    path = save_lora(setup, "connector", tensors)
    reference = reference_builder(setup["checkpoint"], [path]).build(torch.device("cpu"), torch.float32)
    model = apply_loras(load_transformer(setup["checkpoint"], dtype=mx.float32), [(path, STRENGTHS[0])])
    assert_matches(
        "lora with connector keys, fused to_q fp32",
        model.transformer_blocks[0].attn1.to_q.weight,
        reference.state_dict()["transformer_blocks.0.attn1.to_q.weight"],
    )


def test_lora_into_int8_layers_is_refused(setup):
    model = quantize_transformer(load_transformer(setup["checkpoint"], dtype=mx.float32), "int8")
    with pytest.raises(ValueError, match="apply_loras before quantize_transformer"):
        apply_loras(model, [(setup["loras"]["fp32"][1], 1.0)])


def test_lora_fusion_into_scaled_fp8_matches_reference(setup):
    """Scaled fp8 weights (e4m3 x per-tensor weight_scale, as official fp8 files): dequantized,
    fused with the bf16 delta and re-quantized with a new scale, as the reference's
    _fuse_delta_with_scaled_fp8 (which keeps the weights transposed for scaled_mm)."""
    state = setup["state"]
    layers = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.0.ff.net.2"]
    tensors, reference_sd = dict(state), {}
    for layer in layers:
        weight = state[f"{layer}.weight"]
        scale = (weight.abs().max() / 448.0).reshape(())
        quantized = (weight / scale).to(torch.float8_e4m3fn)
        tensors[f"{layer}.weight"], tensors[f"{layer}.weight_scale"] = quantized, scale
        reference_sd[f"{layer}.weight"], reference_sd[f"{layer}.weight_scale"] = quantized.t().contiguous(), scale
    path = save_checkpoint(setup["folder"] / "dit-scaled.safetensors", prefixed(PREFIX, tensors), setup["config"])
    model = apply_loras(load_fp8_transformer(path, dtype=mx.float32), zip(setup["loras"]["fp32"], STRENGTHS))
    lora_sds = [SafetensorsStateDictLoader().load(p, LTXV_LORA_COMFY_RENAMING_MAP) for p in setup["loras"]["fp32"]]
    fused = reference_apply_loras(
        StateDict(reference_sd, torch.device("cpu"), 0, set()),
        [LoraStateDictWithStrength(sd, s) for sd, s in zip(lora_sds, STRENGTHS)],
    ).sd
    modules = dict(model.named_modules())
    for layer in layers:
        ours = modules[layer]
        assert isinstance(ours, Fp8Linear) and "weight_scale" in ours
        np.testing.assert_array_equal(np.array(ours.weight), fused[f"{layer}.weight"].t().view(torch.uint8).numpy())
        assert ours.weight_scale.item() == fused[f"{layer}.weight_scale"].item()
        assert_matches(
            f"lora fused into scaled fp8 {layer} fp32",
            ours.dequantized_weight(mx.float32),
            fused[f"{layer}.weight"].t().float() * fused[f"{layer}.weight_scale"],
        )

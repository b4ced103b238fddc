"""Parity of the feature extractors (V1, V2) and the video/audio embeddings connectors with
ltx-core's `EmbeddingsProcessor.process_hidden_states`, built directly with tiny sizes (its
configurators hard-code the 12B ones) and loaded from an official-layout checkpoint."""

import mlx.core as mx
import pytest
import torch
from reference import assert_cosine, assert_matches, prefixed, save_checkpoint, seed_module_, to_mx

from LTX_2_MLX.loader import CheckpointError, load_embeddings_processor

GEMMA_WIDTH = 16
NUM_STATES = 4  # embeddings + 3 layers
TOKENS = 16
PADDING = 5
REGISTERS = 8

# name: (V2?, rope type, gated attention, audio connector, float64 frequencies)
CASES = {
    "v1_av": (False, "interleaved", False, True, True),
    "v2_av_gated": (True, "split", True, True, True),
    "v1_video_only": (False, "split", False, False, True),
}


def _transformer_config(v2: bool, rope_type: str, gated: bool, float64: bool) -> dict:
    config = {
        "num_attention_heads": 4,
        "attention_head_dim": 8,
        "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 8,
        "connector_num_attention_heads": 4,
        "connector_attention_head_dim": 8 if v2 else GEMMA_WIDTH // 4,
        "connector_num_layers": 2,
        "audio_connector_num_attention_heads": 2,
        "audio_connector_attention_head_dim": 8 if v2 else GEMMA_WIDTH // 2,
        "audio_connector_num_layers": 1,
        "connector_positional_embedding_max_pos": [4096],
        "rope_type": rope_type,
        "connector_apply_gated_attention": gated,
    }
    if float64:
        config["frequencies_precision"] = "float64"
    if v2:
        config.update(
            caption_proj_before_connector=True,
            caption_projection_first_linear=False,
            caption_proj_input_norm=False,
            caption_projection_second_linear=False,
        )
    return config


def reference_processor(v2, rope_type, gated, audio, float64, seed, gemma_width=GEMMA_WIDTH, num_states=NUM_STATES):
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    config = _transformer_config(v2, rope_type, gated, float64)
    flat = gemma_width * num_states
    with torch.device("meta"):
        if v2:
            extractor = FeatureExtractorV2(
                video_aggregate_embed=torch.nn.Linear(flat, 32, bias=True),
                embedding_dim=gemma_width,
                audio_aggregate_embed=torch.nn.Linear(flat, 16, bias=True) if audio else None,
            )
        else:
            extractor = FeatureExtractorV1(torch.nn.Linear(flat, gemma_width, bias=False), is_av=audio)

        def connector(prefix):
            return Embeddings1DConnector(
                attention_head_dim=config[f"{prefix}connector_attention_head_dim"],
                num_attention_heads=config[f"{prefix}connector_num_attention_heads"],
                num_layers=config[f"{prefix}connector_num_layers"],
                positional_embedding_max_pos=config["connector_positional_embedding_max_pos"],
                num_learnable_registers=REGISTERS,
                rope_type=LTXRopeType(rope_type),
                double_precision_rope=float64,
                apply_gated_attention=gated,
            )

        processor = EmbeddingsProcessor(
            feature_extractor=extractor,
            video_connector=connector(""),
            audio_connector=connector("audio_") if audio else None,
        )
    # Every weight, the learnable registers included, from a seeded generator.
    return seed_module_(processor, seed), config


def official_tensors(processor, audio: bool) -> dict:
    state = processor.state_dict()
    video_prefix = (
        "model.diffusion_model.video_embeddings_connector." if audio else "model.diffusion_model.embeddings_connector."
    )
    tensors = {}
    for key, value in state.items():
        if key.startswith("feature_extractor."):
            tensors["text_embedding_projection." + key[len("feature_extractor.") :]] = value
        elif key.startswith("video_connector."):
            tensors[video_prefix + key[len("video_connector.") :]] = value
        elif key.startswith("audio_connector."):
            tensors["model.diffusion_model.audio_embeddings_connector." + key[len("audio_connector.") :]] = value
    # The DiT's own weights sit beside them in the real file.
    tensors.update(prefixed("model.diffusion_model.", {"patchify_proj.weight": torch.zeros(4, 4)}))
    return tensors


def _hidden_states(seed: int):
    gen = torch.Generator().manual_seed(seed)
    states = [torch.randn(1, TOKENS, GEMMA_WIDTH, generator=gen) * (1 + 2 * i) + i for i in range(NUM_STATES)]
    mask = torch.ones(1, TOKENS, dtype=torch.long)
    mask[:, :PADDING] = 0
    return states, mask


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    v2, rope_type, gated, audio, float64 = CASES[request.param]
    reference, config = reference_processor(v2, rope_type, gated, audio, float64, seed=11)
    path = save_checkpoint(
        tmp_path_factory.mktemp("ltx") / "ltx.safetensors", official_tensors(reference, audio), {"transformer": config}
    )
    states, mask = _hidden_states(seed=5)
    with torch.no_grad():
        expected = reference.process_hidden_states(tuple(states), mask)
    return request.param, path, states, mask, expected, audio


def test_embeddings_processor_matches_reference_fp32(case):
    name, path, states, mask, expected, audio = case
    processor = load_embeddings_processor(path)
    video, audio_context, out_mask = processor([to_mx(s) for s in states], to_mx(mask).astype(mx.int32))
    assert_matches(f"text processor {name} video_context fp32", video, expected.video_encoding)
    if audio:
        assert_matches(f"text processor {name} audio_context fp32", audio_context, expected.audio_encoding)
    else:
        assert audio_context is None and expected.audio_encoding is None
    assert out_mask.tolist() == expected.attention_mask.tolist()


def test_embeddings_processor_bf16(case):
    name, path, states, mask, expected, _ = case
    processor = load_embeddings_processor(path, dtype=mx.bfloat16)
    video, _, _ = processor([to_mx(s, mx.bfloat16) for s in states], to_mx(mask).astype(mx.int32))
    assert video.dtype == mx.bfloat16
    assert_cosine(f"text processor {name} video_context bf16", video, expected.video_encoding, 0.99)


def test_embeddings_processor_float32_rope_path(tmp_path):
    reference, config = reference_processor(True, "interleaved", False, True, False, seed=3)
    path = save_checkpoint(tmp_path / "ltx.safetensors", official_tensors(reference, True), {"transformer": config})
    states, mask = _hidden_states(seed=2)
    with torch.no_grad():
        expected = reference.process_hidden_states(tuple(states), mask)
    video, audio, _ = load_embeddings_processor(path)([to_mx(s) for s in states], to_mx(mask).astype(mx.int32))
    assert_matches("text processor float32-rope video_context", video, expected.video_encoding, tol=1e-5)
    assert_matches("text processor float32-rope audio_context", audio, expected.audio_encoding, tol=1e-5)


def test_embeddings_processor_errors_name_the_problem(tmp_path):
    reference, config = reference_processor(True, "split", False, True, True, seed=1)
    tensors = official_tensors(reference, True)
    del tensors["text_embedding_projection.audio_aggregate_embed.weight"]
    path = save_checkpoint(tmp_path / "a.safetensors", tensors, {"transformer": config})
    with pytest.raises(CheckpointError, match="text_embedding_projection.audio_aggregate_embed.weight"):
        load_embeddings_processor(path)
    partial = {k: v for k, v in config.items() if k != "caption_proj_input_norm"}
    path = save_checkpoint(tmp_path / "b.safetensors", official_tensors(reference, True), {"transformer": partial})
    with pytest.raises(CheckpointError, match="caption_proj_input_norm"):
        load_embeddings_processor(path)
    processor = load_embeddings_processor(
        save_checkpoint(tmp_path / "c.safetensors", official_tensors(reference, True), {"transformer": config})
    )
    states, mask = _hidden_states(seed=2)
    with pytest.raises(ValueError, match="feature extractor takes 64"):
        processor([to_mx(s) for s in states[:3]], to_mx(mask).astype(mx.int32))

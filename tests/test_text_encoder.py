"""Parity of the Gemma 3 text encoder (tokenizer, every hidden state, greedy generation) with
transformers and ltx-core, on a tiny random Gemma 3 saved as a Hugging Face directory."""

import copy
import dataclasses
import io
import json
import random
import re
import shutil

import mlx.core as mx
import numpy as np
import pytest
import torch
from reference import assert_cosine, assert_matches, to_numpy

from LTX_2_MLX.loader import CheckpointError, load_text_encoder
from LTX_2_MLX.model.text_encoder import load_prompt_embeddings, save_prompt_embeddings
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextConfig, Gemma3TextModel, KVCache
from LTX_2_MLX.model.text_encoder.prompt_enhancement import gemma_chat_prompt, generate

# Gemma's special tokens in Gemma's order where it has one (pad 0, eos 1, bos 2, unk 3).
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>"]  # fmt: skip
IMAGE_SIZE = 56  # 4×4 patches of 14, pooled 2×2 to 4 image tokens
WORDS = (
    "a cat dog runs jumps over the lazy fox camera pans slowly across sunlit forest river water sound birds "
    "sing wind blows city night neon lights rain falls on street people walk talk laugh music plays softly "
    "0123456789 café naïve"
).split()
MAX_LENGTH = 24  # longer than the sliding window below, shorter than the long prompt (truncation)
SLIDING_WINDOW = 4
PROMPTS = [
    "a cat runs over the lazy fox",
    "  camera pans slowly across a sunlit forest, birds sing  ",
    (
        "rain falls on the neon street at night while people walk and talk and music plays softly "
        "across the city 2024 café"
    ),
    "naïve 🎥 ünïcödé <start_of_turn> tokens",
]


def _train_tokenizer(directory):
    """A small Gemma-style BPE tokenizer (byte fallback, Gemma's special ids) trained here with
    sentencepiece, written as tokenizer.model and as the tokenizer.json transformers reads."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import GemmaTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=320, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=SPECIAL_TOKENS[4:], byte_fallback=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True, minloglevel=2,
    )  # fmt: skip
    spm_path = directory / "tokenizer.model"
    spm_path.write_bytes(model.getvalue())
    # transformers' own sentencepiece → tokenizer.json converter needs protobuf; build the same
    # BPE tokenizer from the extracted vocabulary and merges instead.
    vocab, merges = SentencePieceExtractor(str(spm_path)).extract()
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    fast = GemmaTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
    )  # fmt: skip
    fast.save_pretrained(str(directory))
    return len(vocab)


def _tiny_gemma_config(vocab_size):
    from transformers import Gemma3Config

    text_config = {
        "model_type": "gemma3_text",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 12,
        "sliding_window": SLIDING_WINDOW,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "max_position_embeddings": 512,
    }
    vision_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 14,
        "vision_use_head": False,
    }
    return Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4, eos_token_id=[1, 5],
        boi_token_index=6, eoi_token_index=7, image_token_index=8,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """A tiny random Gemma3ForConditionalGeneration (vision tower included, as the real one),
    saved sharded like the official download, plus the reference model itself."""
    from transformers import Gemma3ForConditionalGeneration

    directory = tmp_path_factory.mktemp("gemma")
    vocab_size = _train_tokenizer(directory)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(_tiny_gemma_config(vocab_size)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            scale = 1.0 / np.sqrt(param.shape[-1]) if param.ndim >= 2 else 0.3
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    model.save_pretrained(str(directory), max_shard_size="100KB", safe_serialization=True)
    _image_processor().save_pretrained(str(directory))
    return directory, model


def _image_processor():
    from transformers import Gemma3ImageProcessor

    return Gemma3ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


@pytest.fixture(scope="module")
def reference_tokenizer(gemma_dir):
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    return LTXVGemmaTokenizer(str(gemma_dir[0]), MAX_LENGTH)


@pytest.fixture(scope="module")
def text_encoder(gemma_dir):
    return load_text_encoder(gemma_dir[0], dtype=mx.float32, max_length=MAX_LENGTH)


def _reference_ids(reference_tokenizer, prompt):
    pairs = reference_tokenizer.tokenize_with_weights(prompt)["gemma"]
    return [int(t) for t, _ in pairs], [int(w) for _, w in pairs]


def test_gemma_directory_is_the_official_layout(gemma_dir):
    directory, _ = gemma_dir
    keys = set()
    for shard in directory.glob("model-*.safetensors"):
        keys |= set(mx.load(str(shard)))
    assert len(list(directory.glob("model-*.safetensors"))) > 1
    assert any(k.startswith("language_model.model.layers.") for k in keys) or any(
        k.startswith("model.language_model.layers.") for k in keys
    )
    assert any("vision_tower" in k for k in keys)


@pytest.mark.parametrize("fallback", [False, True], ids=["tokenizer_json", "sentencepiece"])
def test_tokenizer_matches_ltx_gemma_tokenizer(gemma_dir, reference_tokenizer, tmp_path, fallback):
    from LTX_2_MLX.model.text_encoder import GemmaTokenizer

    directory = gemma_dir[0]
    if fallback:
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(directory / name, tmp_path / name)
        directory = tmp_path
    tokenizer = GemmaTokenizer(directory, max_length=MAX_LENGTH)
    for prompt in PROMPTS + ["", "x" * 200]:
        ids, mask = tokenizer(prompt)
        ref_ids, ref_mask = _reference_ids(reference_tokenizer, prompt)
        assert ids.tolist()[0] == ref_ids, prompt
        assert mask.tolist()[0] == ref_mask, prompt
        assert tokenizer.decode(ref_ids) == reference_tokenizer.tokenizer.decode(ref_ids, skip_special_tokens=True)
    chat_ids = tokenizer.encode(gemma_chat_prompt("Describe.", "café 🎥"))
    assert chat_ids == reference_tokenizer.tokenizer(gemma_chat_prompt("Describe.", "café 🎥")).input_ids
    assert tokenizer.decode(chat_ids) == reference_tokenizer.tokenizer.decode(chat_ids, skip_special_tokens=True)


# Whitespace, NFKC-foldable characters, special tokens and a chat turn: where sentencepiece's
# own normalizer and transformers' conversion of it part ways.
DUMMY_PREFIX_PROMPTS = [
    "a cat runs over the lazy fox",
    " a cat",
    "   three leading spaces",
    "multiple   spaces  between   words",
    "line one\nline two\n\n  indented after a blank line",
    "tab\tseparated\t\twords",
    "ＦＵＬＬＷＩＤＴＨ ① ﬁ café naïve",
    "<start_of_turn>user\nhi<end_of_turn>\n",
    "",
    "x" * 200,
]


@pytest.fixture(scope="module")
def dummy_prefix_tokenizer_dirs(tmp_path_factory):
    """A Gemma-style sentencepiece model trained with sentencepiece's default normalizer (dummy
    "▁" prefix, whitespace folding, NFKC): one directory with tokenizer.model alone, one with
    the tokenizer.json transformers converts it to."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=320, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=SPECIAL_TOKENS[4:], byte_fallback=True, add_dummy_prefix=True,
        split_digits=True, minloglevel=2,
    )  # fmt: skip
    model_only = tmp_path_factory.mktemp("tokenizer_model_only")
    (model_only / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer_config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False}
    (model_only / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with_json = tmp_path_factory.mktemp("converted_tokenizer_json")
    AutoTokenizer.from_pretrained(str(model_only)).save_pretrained(str(with_json))
    assert (with_json / "tokenizer.json").is_file()
    return {"tokenizer_model_only": model_only, "converted_tokenizer_json": with_json}


@pytest.mark.parametrize("files", ["tokenizer_model_only", "converted_tokenizer_json"])
def test_tokenizer_matches_transformers_for_a_dummy_prefix_sentencepiece_model(dummy_prefix_tokenizer_dirs, files):
    """transformers' Gemma tokenizer never writes the "▁" sentencepiece would put before the
    first word, nor folds spaces or applies NFKC: neither do we, from either file."""
    import sentencepiece as spm
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    from LTX_2_MLX.model.text_encoder import GemmaTokenizer

    directory = dummy_prefix_tokenizer_dirs[files]
    sentencepiece = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    assert sentencepiece.encode("a cat", out_type=str)[0].startswith("▁")  # the model does add one
    reference = LTXVGemmaTokenizer(str(directory), MAX_LENGTH)
    tokenizer = GemmaTokenizer(directory, max_length=MAX_LENGTH)
    assert not tokenizer.id_to_token(tokenizer.encode("a cat")[1]).startswith("▁")
    chat = gemma_chat_prompt("Describe the scene.", "  a cat\n runs  ")
    for prompt in DUMMY_PREFIX_PROMPTS + [chat]:
        ids = tokenizer.encode(prompt)
        assert ids == reference.tokenizer(prompt).input_ids, prompt
        assert tokenizer.decode(ids) == reference.tokenizer.decode(ids, skip_special_tokens=True), prompt
        assert tokenizer.decode(ids, skip_special_tokens=False) == reference.tokenizer.decode(ids), prompt
        padded_ids, mask = tokenizer(prompt)
        assert (padded_ids.tolist()[0], mask.tolist()[0]) == _reference_ids(reference, prompt), prompt


def _reference_hidden_states(gemma_dir, reference_tokenizer, prompt):
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder as ReferenceEncoder

    reference = ReferenceEncoder(model=gemma_dir[1], tokenizer=reference_tokenizer, dtype=torch.float32)
    with torch.no_grad():
        hidden_states, mask = reference.encode(prompt)
    return hidden_states, mask


@pytest.mark.parametrize("prompt_index", [0, 2], ids=["padded", "truncated"])
def test_gemma_hidden_states_match_reference_fp32(gemma_dir, reference_tokenizer, text_encoder, prompt_index):
    prompt = PROMPTS[prompt_index]
    ref_states, ref_mask = _reference_hidden_states(gemma_dir, reference_tokenizer, prompt)
    ids, mask = text_encoder.tokenize(prompt)
    assert mask.tolist() == ref_mask.tolist()
    states = text_encoder.hidden_states(ids, mask)
    assert len(states) == len(ref_states) == 4
    for layer, (state, ref) in enumerate(zip(states, ref_states)):
        assert_matches(f"gemma hidden state {layer} ({prompt_index and 'truncated' or 'padded'}) fp32", state, ref)


def test_gemma_hidden_states_bf16_and_quantized(gemma_dir, reference_tokenizer):
    prompt = PROMPTS[1]
    ref_states, _ = _reference_hidden_states(gemma_dir, reference_tokenizer, prompt)
    variants = (
        ("bf16", {"dtype": mx.bfloat16}, 0.999),
        ("int8", {"dtype": mx.float32, "quantize_bits": 8}, 0.999),
        ("int4", {"dtype": mx.float32, "quantize_bits": 4}, 0.9),  # random weights quantize poorly
    )
    for label, kwargs, minimum in variants:
        encoder = load_text_encoder(gemma_dir[0], max_length=MAX_LENGTH, **kwargs)
        states = encoder.hidden_states(*encoder.tokenize(prompt))
        assert_cosine(f"gemma last hidden state {label}", states[-1], ref_states[-1], minimum)
        encoder.free()
        with pytest.raises(RuntimeError, match="freed"):
            encoder.hidden_states(*encoder.tokenize(prompt))


def test_greedy_generation_matches_transformers(gemma_dir, text_encoder):
    _, reference = gemma_dir
    chat = gemma_chat_prompt("Describe a scene.", "user prompt: a cat runs")
    prompt_ids = text_encoder.tokenizer.encode(chat)
    assert len(prompt_ids) > SLIDING_WINDOW
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=16, do_sample=False, eos_token_id=[1, 5], pad_token_id=0,
        )  # fmt: skip
    ref_new = out[0, len(prompt_ids) :].tolist()
    new = generate(text_encoder.model, prompt_ids, max_new_tokens=16, temperature=0.0)
    assert new == ref_new
    # The KV-cached steps (sliding window included) give the logits of one uncached pass.
    model = text_encoder.model
    cache = KVCache(len(model.layers))
    hidden, _ = model(mx.array([prompt_ids]), cache=cache, output_hidden_states=False)
    step_logits = [model.logits(hidden)]
    for token in ref_new[:-1]:
        hidden, _ = model(mx.array([[token]]), cache=cache, output_hidden_states=False)
        step_logits.append(model.logits(hidden))
    with torch.no_grad():
        ref_logits = reference(torch.tensor([prompt_ids + ref_new[:-1]])).logits
    assert_matches("gemma KV-cached decoding logits fp32", mx.concatenate(step_logits, axis=1), ref_logits)
    # Sampling runs, is reproducible per seed and stays in the vocabulary.
    sampled = generate(text_encoder.model, prompt_ids, 8, temperature=0.7, top_k=50, seed=3)
    assert sampled == generate(text_encoder.model, prompt_ids, 8, temperature=0.7, top_k=50, seed=3)
    assert all(0 <= t < text_encoder.model.config.vocab_size for t in sampled)


def test_missing_gemma_weights_are_named(gemma_dir, tmp_path):
    directory = gemma_dir[0]
    for path in directory.iterdir():
        shutil.copy(path, tmp_path / path.name)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    victim = next(k for k in index["weight_map"] if k.endswith("layers.1.mlp.up_proj.weight"))
    shard = tmp_path / index["weight_map"][victim]
    tensors, metadata = mx.load(str(shard), return_metadata=True)
    del tensors[victim]
    mx.save_safetensors(str(shard), tensors, metadata=metadata)
    del index["weight_map"][victim]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"missing: layers\.1\.mlp\.up_proj\.weight"):
        load_text_encoder(tmp_path, dtype=mx.float32)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_text_encoder(tmp_path)


def test_prompt_embeddings_round_trip(tmp_path):
    video = mx.random.normal((1, 8, 16))
    audio = mx.random.normal((1, 8, 4))
    mask = mx.ones((1, 8), dtype=mx.int32)
    path = tmp_path / "prompt.safetensors"
    save_prompt_embeddings(path, video, audio, mask, prompt="a cat")
    loaded = load_prompt_embeddings(path)
    for a, b in zip(loaded, (video, audio, mask)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_encode_prompts_matches_reference_pipeline(gemma_dir, tmp_path):
    """Tokenize (1024 tokens, as ltx-core) → Gemma → V2 feature extractor → connectors, against
    ltx-core's GemmaTextEncoder.encode + EmbeddingsProcessor.process_hidden_states."""
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder as ReferenceEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from reference import save_checkpoint
    from test_text_encoder_processor import official_tensors, reference_processor

    from LTX_2_MLX.loader.text_encoder import encode_prompts

    processor, config = reference_processor(True, "split", True, True, True, seed=4, gemma_width=64, num_states=4)
    checkpoint = save_checkpoint(
        tmp_path / "ltx.safetensors", official_tensors(processor, True), {"transformer": config}
    )
    reference = ReferenceEncoder(model=gemma_dir[1], tokenizer=LTXVGemmaTokenizer(str(gemma_dir[0]), 1024))
    prompts = [PROMPTS[1], "blurry, low quality"]
    results = encode_prompts(prompts, gemma_dir[0], checkpoint, dtype=mx.float32)
    for index, (prompt, (video, audio, mask)) in enumerate(zip(prompts, results)):
        with torch.no_grad():
            expected = processor.process_hidden_states(*reference.encode(prompt))
        assert video.shape == (1, 1024, 32) and audio.shape == (1, 1024, 16)
        assert_matches(f"encode_prompts video_context prompt {index} fp32", video, expected.video_encoding)
        assert_matches(f"encode_prompts audio_context prompt {index} fp32", audio, expected.audio_encoding)
        assert mask.tolist() == expected.attention_mask.tolist()


def test_image_prompt_and_greedy_generation_match_transformers(gemma_dir, reference_tokenizer):
    """Image-to-video enhancement's inputs: Gemma3Processor's token ids and pixels, the SigLIP +
    projector features, and greedy tokens generated with the image in the prompt."""
    from transformers import Gemma3Processor

    directory, reference = gemma_dir
    encoder = load_text_encoder(directory, dtype=mx.float32, with_vision=True)
    image = np.random.default_rng(0).integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
    system, user = "Describe the video.", "User Raw Input Prompt: a cat runs."
    processor = Gemma3Processor(
        image_processor=_image_processor(), tokenizer=reference_tokenizer.tokenizer, image_seq_length=4
    )
    inputs = processor(
        text=gemma_chat_prompt(system, user, image_text="<start_of_image>"), images=torch.from_numpy(image),
        return_tensors="pt",
    )  # fmt: skip
    prompt_ids, embeddings, groups = encoder.image_prompt(system, user, image)
    assert prompt_ids == inputs["input_ids"][0].tolist()
    assert (np.array(groups[0]) >= 0).tolist() == inputs["token_type_ids"][0].bool().tolist()

    from LTX_2_MLX.model.text_encoder.vision import preprocess_image

    pixels = preprocess_image(image, IMAGE_SIZE)
    assert_matches("gemma image pixels", pixels, inputs["pixel_values"].permute(0, 2, 3, 1))
    with torch.no_grad():
        ref_features = reference.model.get_image_features(inputs["pixel_values"])
    assert_matches("gemma image features (SigLIP + projector) fp32", encoder.vision(pixels), ref_features)

    with torch.no_grad():
        ref_logits = reference(**inputs).logits
    hidden, _ = encoder.model(
        mx.array([prompt_ids]), output_hidden_states=False, input_embeddings=embeddings, image_groups=groups
    )
    assert_matches("gemma logits of an image prompt fp32", encoder.model.logits(hidden), ref_logits)

    with torch.no_grad():
        out = reference.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=[1, 5], pad_token_id=0)
    ref_new = out[0, len(prompt_ids) :].tolist()
    new = generate(encoder.model, prompt_ids, 12, temperature=0.0, prompt_embeddings=embeddings, image_groups=groups)
    assert new == ref_new
    assert isinstance(encoder.enhance_i2v("a cat", image, max_new_tokens=4, temperature=0), str)


# Gemma 3's chat template as google/gemma-3-12b-it's tokenizer_config.json carries it (the
# tokenizer trained above has none), here to check the prompt text enhancement renders.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


def test_enhancement_prompts_match_the_reference_chat_messages(reference_tokenizer):
    """The text ltx-core's enhance_t2v / enhance_i2v render through the chat template."""
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder as ReferenceEncoder

    from LTX_2_MLX.model.text_encoder.prompt_enhancement import system_prompts

    assert system_prompts()["t2v"] == ReferenceEncoder().default_gemma_t2v_system_prompt
    assert system_prompts()["i2v"] == ReferenceEncoder().default_gemma_i2v_system_prompt
    tokenizer = reference_tokenizer.tokenizer
    prompt = "  a cat runs  "
    t2v = [
        {"role": "system", "content": system_prompts()["t2v"]},
        {"role": "user", "content": f"user prompt: {prompt}"},
    ]
    i2v = [
        {"role": "system", "content": system_prompts()["i2v"]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"User Raw Input Prompt: {prompt}."}]},
    ]
    render = lambda messages: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=GEMMA3_CHAT_TEMPLATE
    )
    assert gemma_chat_prompt(system_prompts()["t2v"], f"user prompt: {prompt}") == render(t2v)
    assert gemma_chat_prompt(
        system_prompts()["i2v"], f"User Raw Input Prompt: {prompt}.", image_text="<start_of_image>"
    ) == render(i2v)


def test_config_of_the_real_gemma_3_12b():
    """ltx-core's own Gemma 3 12B config (what the official directory holds) parses to the
    sizes the issue names: 48 layers, every sixth global, 16/8 heads of 256, window 1024."""
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    from LTX_2_MLX.model.text_encoder.vision import VisionConfig

    raw = GEMMA3_CONFIG_FOR_LTX.to_dict()
    config = Gemma3TextConfig.from_dict(raw)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (3840, 48, 16)
    assert (config.num_key_value_heads, config.head_dim, config.sliding_window) == (8, 256, 1024)
    assert config.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 8
    assert (config.rope_scaling_factor, config.rope_theta, config.rope_local_base_freq) == (8.0, 1e6, 1e4)
    assert config.eos_token_ids == [1, 106]
    vision = VisionConfig.from_dict(raw, config.hidden_size)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size, vision.patch_size) == (1152, 27, 896, 14)
    assert (vision.mm_tokens_per_image, vision.image_token_id) == (256, 262144)
    with pytest.raises(ValueError, match="lacks"):
        Gemma3TextConfig.from_dict({"text_config": {"hidden_size": 8}})


@pytest.mark.parametrize("layout", ["model.language_model.", "model."], ids=["newer_multimodal", "text_only"])
def test_other_hugging_face_layouts_load_the_same_model(gemma_dir, text_encoder, tmp_path, layout):
    """Newer transformers save the multimodal model as model.language_model.*, and a text-only
    Gemma3ForCausalLM as model.*: both load, from one unsharded model.safetensors."""
    directory = gemma_dir[0]
    tensors = {}
    for shard in directory.glob("model-*.safetensors"):
        for key, value in mx.load(str(shard)).items():
            if key.startswith("language_model.model."):
                tensors[layout + key[len("language_model.model.") :]] = value
            elif layout != "model.":
                tensors["model." + key] = value
    mx.save_safetensors(str(tmp_path / "model.safetensors"), tensors)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(directory / name, tmp_path / name)
    encoder = load_text_encoder(tmp_path, dtype=mx.float32, max_length=MAX_LENGTH)
    ids, mask = encoder.tokenize(PROMPTS[0])
    for state, expected in zip(encoder.hidden_states(ids, mask), text_encoder.hidden_states(ids, mask)):
        np.testing.assert_array_equal(to_numpy(state), to_numpy(expected))


# What transformers 5 writes for the RoPE settings of _tiny_gemma_config (and of Gemma 3 12B)
# instead of rope_scaling, rope_theta and rope_local_base_freq: Gemma3TextConfig's
# convert_rope_params_to_dict, as transformers 5.24 saves it.
TRANSFORMERS_5_ROPE_PARAMETERS = {
    "full_attention": {"factor": 8.0, "rope_theta": 1_000_000.0, "rope_type": "linear"},
    "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
}
OLD_ROPE_KEYS = ("rope_scaling", "rope_theta", "rope_local_base_freq")


def _with_rope_parameters(text_config: dict, form: str) -> dict:
    """`text_config` with its RoPE settings rewritten the transformers 5 way, per layer type or
    flat (a flat rope_parameters is rope_scaling under its transformers 5 name)."""
    text_config = {key: value for key, value in copy.deepcopy(text_config).items() if key not in OLD_ROPE_KEYS}
    if form == "per_layer_type":
        text_config["rope_parameters"] = copy.deepcopy(TRANSFORMERS_5_ROPE_PARAMETERS)
    else:
        text_config["rope_parameters"] = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}
        text_config["rope_local_base_freq"] = 10_000.0
    return text_config


@pytest.mark.parametrize("form", ["per_layer_type", "flat"])
def test_transformers_5_rope_parameters_give_the_same_hidden_states(gemma_dir, text_encoder, tmp_path, form):
    """The same weights under a transformers 5 config.json give exactly the hidden states of the
    transformers 4 one, which test_gemma_hidden_states_match_reference_fp32 checks against
    transformers' Gemma3; the global layers' factor of 8 is not silently dropped."""
    directory = gemma_dir[0]
    for path in directory.iterdir():
        shutil.copy(path, tmp_path / path.name)
    config = json.loads((directory / "config.json").read_text())
    assert config["text_config"]["rope_scaling"]["factor"] == 8.0 and "rope_parameters" not in config["text_config"]
    config["text_config"] = _with_rope_parameters(config["text_config"], form)
    (tmp_path / "config.json").write_text(json.dumps(config))
    encoder = load_text_encoder(tmp_path, dtype=mx.float32, max_length=MAX_LENGTH)
    assert encoder.model.config == text_encoder.model.config
    unscaled = Gemma3TextModel(dataclasses.replace(encoder.model.config, rope_scaling_factor=1.0))
    unscaled.update(encoder.model.parameters())
    for prompt in (PROMPTS[0], PROMPTS[2]):
        ids, mask = encoder.tokenize(prompt)
        states = encoder.hidden_states(ids, mask)
        for state, expected in zip(states, text_encoder.hidden_states(ids, mask)):
            np.testing.assert_array_equal(to_numpy(state), to_numpy(expected))
        # What a dropped factor gives (the bug this guards): visibly other hidden states.
        _, unscaled_states = unscaled(ids, mask)
        assert not np.allclose(to_numpy(unscaled_states[-1]), to_numpy(states[-1]), atol=1e-3)


def test_real_gemma_3_12b_config_reads_the_same_from_transformers_5():
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    raw = GEMMA3_CONFIG_FOR_LTX.to_dict()
    expected = Gemma3TextConfig.from_dict(raw)
    for form in ("per_layer_type", "flat"):
        new = {**raw, "text_config": _with_rope_parameters(raw["text_config"], form)}
        assert Gemma3TextConfig.from_dict(new) == expected, form
    # Old and new keys side by side are read when they agree.
    both = {**raw, "text_config": {**raw["text_config"], "rope_parameters": TRANSFORMERS_5_ROPE_PARAMETERS}}
    assert Gemma3TextConfig.from_dict(both) == expected


TINY_SIZES = {
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 4,
    "layer_types": ["sliding_attention", "full_attention"],
}


@pytest.mark.parametrize(
    "rope, message",
    [
        ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 8.0}}}, "rope_type 'yarn'"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"rope_parameters": {"full_attention": {"rope_type": "linear"}}}, "'linear' with factor=None"),
        ({"rope_scaling": {"type": "linear", "factor": "8"}}, "'linear' with factor='8'"),
        ({"rope_parameters": {"sliding_attention": {"rope_theta": "10k"}}}, "['rope_theta']='10k'"),
        ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "partial_rotary_factor": 0.5}}},
         "['partial_rotary_factor'], which Gemma 3 does not use"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 8.0, "full_attention": {"rope_type": "default"}}},
         "mixes per-layer-type entries with top-level keys ['factor', 'rope_type']"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 8.0},
          "rope_parameters": {"full_attention": {"rope_type": "default"}}}, "delete the stale rope_scaling"),
        ({"rope_parameters": [8.0]}, "rope_parameters must be a JSON object"),
    ],
    ids=["unknown_type", "unknown_old_type", "linear_without_factor", "factor_not_a_number", "bad_theta",
         "unread_key", "mixed_forms", "old_and_new_disagree", "not_an_object"],
)  # fmt: skip
def test_unreadable_rope_settings_are_refused(rope, message):
    where = "/models/gemma-3-12b-it/config.json"
    with pytest.raises(ValueError) as error:
        Gemma3TextConfig.from_dict({"text_config": {**TINY_SIZES, **rope}}, where)
    text = str(error.value)
    assert text.startswith(where + ": ") and message in text and "\n" not in text


def test_load_text_encoder_names_the_config_with_unreadable_rope(gemma_dir, tmp_path):
    config = json.loads((gemma_dir[0] / "config.json").read_text())
    config["text_config"]["rope_scaling"] = {"rope_type": "linear"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    expected = f"{tmp_path / 'config.json'}: rope_scaling is rope_type 'linear' with factor=None"
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        load_text_encoder(tmp_path)

"""Loading the text side: Gemma 3 from a Hugging Face model directory (`--gemma-path`), and the
feature extractor + embeddings connectors from the official LTX-2 checkpoint."""

import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.loader.checkpoint import (
    Checkpoint,
    CheckpointError,
    block_tensors,
    load_module_weights,
    reads_at_once,
)
from LTX_2_MLX.loader.streaming import BlockReader, StreamedBlocks, quantize_weights, quantized_paths
from LTX_2_MLX.model.text_encoder.embeddings_connector import EmbeddingsConnectorConfig
from LTX_2_MLX.model.text_encoder.embeddings_processor import (
    EmbeddingsProcessor,
    EmbeddingsProcessorConfig,
    feature_extractor_version,
)
from LTX_2_MLX.model.text_encoder.encoder import PROMPT_EMBEDDINGS_FORMAT, GemmaTextEncoder
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextConfig, Gemma3TextModel, language_model_prefix
from LTX_2_MLX.model.text_encoder.prompt_enhancement import clean_response
from LTX_2_MLX.model.text_encoder.tokenizer import DEFAULT_MAX_LENGTH, GemmaTokenizer
from LTX_2_MLX.model.text_encoder.vision import Gemma3Vision, VisionConfig, sanitize_vision
from LTX_2_MLX.progress import progress_bar

_DOWNLOAD_HINT = (
    "Download it with: hf download google/gemma-3-12b-it --local-dir <dir> (then --gemma-path <dir>), "
    "after accepting its licence on huggingface.co and `hf auth login`."
)


def _gemma_shards(gemma_dir: Path) -> list[Checkpoint]:
    index = gemma_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        shards = sorted({gemma_dir / name for name in weight_map.values()})
        absent = [s.name for s in shards if not s.is_file()]
        if absent:
            raise CheckpointError(
                f"{gemma_dir}: shards listed in model.safetensors.index.json are missing: {absent}. {_DOWNLOAD_HINT}"
            )
    else:
        shards = sorted(gemma_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{gemma_dir}: no model*.safetensors files. {_DOWNLOAD_HINT}")
    return [Checkpoint.open(shard) for shard in shards]


def _find_tokenizer_dir(gemma_dir: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer.model"):
        if (gemma_dir / name).is_file():
            return gemma_dir
    for name in ("tokenizer.json", "tokenizer.model"):
        found = sorted(gemma_dir.rglob(name))
        if found:
            return found[0].parent
    raise CheckpointError(f"{gemma_dir}: no tokenizer.json or tokenizer.model found. {_DOWNLOAD_HINT}")


def _quantizable(group_size: int):
    def predicate(_path: str, module: nn.Module) -> bool:
        return isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.shape[-1] % group_size == 0

    return predicate


def _read_gemma_dir(gemma_dir: Path) -> tuple[dict, Gemma3TextConfig, list[Checkpoint], str]:
    """The directory's raw config, its parsed text config, its shards and the language model's
    key prefix: everything but the weights."""
    if not gemma_dir.is_dir():
        raise CheckpointError(f"{gemma_dir}: no such directory. {_DOWNLOAD_HINT}")
    config_path = gemma_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{gemma_dir}: no config.json. {_DOWNLOAD_HINT}")
    try:
        raw_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err}). {_DOWNLOAD_HINT}") from None
    config = Gemma3TextConfig.from_dict(raw_config, str(config_path))
    shards = _gemma_shards(gemma_dir)
    prefix = language_model_prefix(name for shard in shards for name in shard.entries)
    if prefix is None:
        raise CheckpointError(
            f"{gemma_dir}: no Gemma language model in its safetensors (looked for "
            "language_model.model.embed_tokens.weight and its variants). Is this a Gemma 3 directory?"
        )
    return raw_config, config, shards, prefix


def check_text_encoder_dir(gemma_dir: str | Path) -> None:
    """Refuse a Gemma directory load_text_encoder could not use, from its files' headers alone."""
    gemma_dir = Path(gemma_dir)
    _read_gemma_dir(gemma_dir)
    _find_tokenizer_dir(gemma_dir)


def check_prompt_embeddings(path: str | Path | Checkpoint, checkpoint: str | Path | Checkpoint | None = None) -> None:
    """Refuse, from its header alone, a file that is not prompt embeddings from `ltx2-mlx
    encode-prompt`, or (given the checkpoint) one without the audio context the model needs."""
    embeddings = Checkpoint.open(path)
    names = embeddings.entries
    if embeddings.metadata.get("format") != PROMPT_EMBEDDINGS_FORMAT or not {"video_context", "mask"} <= set(names):
        raise CheckpointError(
            f"{embeddings.path}: not a prompt-embeddings file (it holds {sorted(names)[:4]}); "
            "write one with `ltx2-mlx encode-prompt`."
        )
    if checkpoint is not None and "audio_context" not in names:
        checkpoint = Checkpoint.open(checkpoint)
        if checkpoint.holds("model.diffusion_model.audio_"):
            raise CheckpointError(
                f"{embeddings.path}: has no audio context, but {checkpoint.path.name} makes audio; "
                "encode the prompt again with `ltx2-mlx encode-prompt --checkpoint-path` that checkpoint."
            )


# What a streamed Gemma does not hold: its decoder layers (read per pass) and the vision tower.
_NOT_HELD_STREAMED = ("layers.", "vision_tower.", "multi_modal_projector.")


def load_text_encoder(
    gemma_dir: str | Path,
    dtype: mx.Dtype = mx.bfloat16,
    quantize_bits: int | None = None,
    group_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
    with_vision: bool = False,
    low_memory: bool = False,
    eval_layers: int | None = None,
) -> GemmaTextEncoder:
    """Gemma 3's language model and tokenizer from a Hugging Face directory (config.json,
    model-*.safetensors, tokenizer files). With `quantize_bits` (8 or 4) the weights are
    quantized layer by layer as they are loaded. The vision tower (~0.4B parameters) is read
    only `with_vision`, which image-to-video prompt enhancement needs.

    `low_memory` streams the decoder layers from the shards (loader.streaming): only the
    embedding, the final norm and about two layers are resident, each layer read (and
    quantized) again on every forward; the outputs are bitwise the resident model's. It suits
    encoding, one forward per prompt; prompt enhancement runs one forward per generated token.
    `eval_layers`: layers per evaluation (default: the whole forward resident, 1 streamed)."""
    if quantize_bits not in (None, 4, 8):
        raise ValueError(f"quantize_bits={quantize_bits} must be None, 8 or 4.")
    gemma_dir = Path(gemma_dir)
    raw_config, config, shards, prefix = _read_gemma_dir(gemma_dir)
    weights = {}
    for shard in shards:
        if shard.holds(prefix):
            weights.update(shard.load(prefix))  # lazy: only the language model is read
            if low_memory and reads_at_once():  # all but the streamed layers is used now
                weights.update(shard.load_resident(prefix, keep=lambda key: not key.startswith(_NOT_HELD_STREAMED)))
    weights = {k: v for k, v in weights.items() if not k.startswith(("vision_tower.", "multi_modal_projector."))}

    model = Gemma3TextModel(config)
    load_module_weights(model, weights, gemma_dir, "Gemma language model", dtype)
    del weights
    if low_memory:
        _stream_layers(model, shards, prefix, dtype, quantize_bits, group_size)
    else:
        # Materialise (and quantize) one layer at a time, so the peak stays near the final size.
        layers = progress_bar(
            model.layers, desc="loading Gemma", unit="layer", leave=False, disable=len(model.layers) < 16
        )
        for layer in layers:
            if quantize_bits is not None:
                nn.quantize(layer, group_size=group_size, bits=quantize_bits, class_predicate=_quantizable(group_size))
            mx.eval(layer.parameters())
    if eval_layers is not None:
        model.eval_layers = eval_layers
    if quantize_bits is not None:
        # The embedding (also the tied LM head) is swapped from its parent.
        nn.quantize(
            model,
            group_size=group_size,
            bits=quantize_bits,
            class_predicate=lambda path, module: path == "embed_tokens" and _quantizable(group_size)(path, module),
        )
    mx.eval(model.parameters())
    tokenizer = GemmaTokenizer(_find_tokenizer_dir(gemma_dir), max_length=max_length)
    if not with_vision:
        return GemmaTextEncoder(model, tokenizer)
    vision, image_options = _load_vision(gemma_dir, raw_config, config, shards, dtype)
    return GemmaTextEncoder(model, tokenizer, vision, **image_options)


def _stream_layers(
    model: Gemma3TextModel, shards: list[Checkpoint], prefix: str, dtype, quantize_bits: int | None, group_size: int
) -> None:
    """Replace the model's decoder layers by StreamedBlocks reading them from `shards`, cast to
    `dtype` (as load_module_weights casts) and quantized as nn.quantize would."""
    layers = list(model.layers)
    if quantize_bits is not None:
        for layer in layers:  # lazily: the skeletons' layer types, nothing evaluated
            nn.quantize(layer, group_size=group_size, bits=quantize_bits, class_predicate=_quantizable(group_size))
    layers_prefix = prefix + "layers."

    def open_pass() -> BlockReader:
        layer_tensors = block_tensors(shards, layers_prefix)

        def read(index: int) -> dict[str, mx.array]:
            weights = {
                key: value.astype(dtype) if dtype is not None and mx.issubdtype(value.dtype, mx.floating) else value
                for key, value in layer_tensors(index).items()
            }
            return quantize_weights(weights, quantized_paths(layers[index]))

        return read

    model.layers = StreamedBlocks(layers, open_pass)
    model.eval_layers = 1


def _load_vision(gemma_dir, raw_config, text_config, shards: list[Checkpoint], dtype):
    vision_config = VisionConfig.from_dict(raw_config, text_config.hidden_size, str(gemma_dir / "config.json"))
    if vision_config is None:
        raise CheckpointError(
            f"{gemma_dir}: a text-only Gemma (no vision_config); image-to-video prompt enhancement needs the "
            "multimodal google/gemma-3-12b-it."
        )
    weights = {}
    for shard in shards:
        if any("vision_tower." in n or "multi_modal_projector." in n for n in shard.entries):
            weights.update(sanitize_vision(shard.load()))
    vision = Gemma3Vision(vision_config)
    load_module_weights(vision, weights, gemma_dir, "Gemma vision tower", dtype)
    mx.eval(vision.parameters())
    options = {}
    preprocessor = gemma_dir / "preprocessor_config.json"
    if preprocessor.is_file():
        processor_config = json.loads(preprocessor.read_text())
        size = processor_config.get("size", {})
        options["image_size"] = size.get("height", vision_config.image_size)
        if size.get("width", options["image_size"]) != options["image_size"]:
            raise CheckpointError(f"{preprocessor}: only square image sizes are supported, got {size}.")
        options["image_mean"] = tuple(processor_config.get("image_mean", (0.5, 0.5, 0.5)))
        options["image_std"] = tuple(processor_config.get("image_std", (0.5, 0.5, 0.5)))
    return vision, options


# Official LTX-2 checkpoint prefixes (ltx-core EMBEDDINGS_PROCESSOR_KEY_OPS and the video-only map).
_PROCESSOR_PREFIXES = {
    "text_embedding_projection.": "feature_extractor.",
    "model.diffusion_model.video_embeddings_connector.": "video_connector.",
    "model.diffusion_model.audio_embeddings_connector.": "audio_connector.",
    "model.diffusion_model.embeddings_connector.": "video_connector.",
}


def load_embeddings_processor(
    checkpoint: str | Path | Checkpoint, dtype: mx.Dtype | None = None
) -> EmbeddingsProcessor:
    """Feature extractor (V1 or V2, as the checkpoint's transformer config says) and the video
    and audio embeddings connectors. Widths and register counts come from the weights."""
    checkpoint = Checkpoint.open(checkpoint)
    checkpoint_path = checkpoint.path
    config = checkpoint.config("transformer", what="text embeddings processor")["transformer"]
    weights = {}
    for source, tensors in checkpoint.load_groups(list(_PROCESSOR_PREFIXES)).items():
        weights.update({_PROCESSOR_PREFIXES[source] + k: v for k, v in tensors.items()})
    try:
        version = feature_extractor_version(config)
    except ValueError as err:
        raise CheckpointError(f"{checkpoint_path}: {err}") from None

    def shape_of(key: str) -> tuple[int, ...]:
        if key not in weights:
            raise CheckpointError(
                f"{checkpoint_path}: missing {key.replace('feature_extractor.', 'text_embedding_projection.')} "
                f"(its config asks for the V{version} feature extractor). Use the full official LTX-2 checkpoint."
            )
        return tuple(weights[key].shape)

    if version == 1:
        video_dim, flat_dim = shape_of("feature_extractor.aggregate_embed.weight")
    else:
        video_dim, flat_dim = shape_of("feature_extractor.video_aggregate_embed.weight")
    has_audio = any(k.startswith("audio_connector.") for k in weights)
    audio_dim = None
    if has_audio:
        audio_dim = video_dim if version == 1 else shape_of("feature_extractor.audio_aggregate_embed.weight")[0]
    if version == 2:
        expected = {"video": (config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0), video_dim)}
        if has_audio:
            audio_heads = config.get("audio_num_attention_heads", 0) * config.get("audio_attention_head_dim", 0)
            expected["audio"] = (audio_heads, audio_dim)
        for name, (from_config, from_weights) in expected.items():
            if from_config != from_weights:
                raise CheckpointError(
                    f"{checkpoint_path}: the {name} aggregate embed is {from_weights} wide, the transformer config "
                    f"says {from_config}. The checkpoint's config and weights disagree."
                )
    if not any(k.startswith("video_connector.") for k in weights):
        raise CheckpointError(
            f"{checkpoint_path}: no embeddings connector weights. Use the full official LTX-2 checkpoint."
        )

    def registers(prefix: str) -> int | None:
        key = prefix + "learnable_registers"
        return weights[key].shape[0] if key in weights else None

    processor_config = EmbeddingsProcessorConfig(
        feature_extractor_version=version,
        flat_dim=flat_dim,
        video_dim=video_dim,
        audio_dim=audio_dim,
        video_connector=EmbeddingsConnectorConfig.from_transformer_config(
            config, audio=False, num_learnable_registers=registers("video_connector.")
        ),
        audio_connector=EmbeddingsConnectorConfig.from_transformer_config(
            config, audio=True, num_learnable_registers=registers("audio_connector.")
        )
        if has_audio
        else None,
    )
    processor = EmbeddingsProcessor(processor_config)
    load_module_weights(processor, weights, checkpoint.path, "text embeddings processor", dtype)
    mx.eval(processor.parameters())
    return processor


def streams_gemma(low_memory: bool, enhance_prompt: bool) -> bool:
    """Whether Gemma's layers are streamed from their files rather than held: always when only
    encoding, which is one pass over the layers (each read once either way, so holding all 24 GB
    of them buys nothing), and with `low_memory` for prompt enhancement too (a pass per token)."""
    return low_memory or not enhance_prompt


def encode_prompts(
    prompts: list[str],
    gemma_dir: str | Path,
    checkpoint_path: str | Path | Checkpoint,
    *,
    enhance_first_prompt: bool = False,
    enhance_prompt_image=None,
    enhance_prompt_seed: int = 42,
    quantize_bits: int | None = None,
    dtype: mx.Dtype = mx.bfloat16,
    low_memory: bool = False,
    eval_layers: int | None = None,
    on_enhanced: Callable[[str], None] | None = None,
) -> list[tuple[mx.array, mx.array | None, mx.array]]:
    """(video_context, audio_context, mask) per prompt, as ltx-pipelines' `encode_prompts`: Gemma
    is loaded, optionally rewrites prompts[0], encodes every prompt and is freed before the
    embeddings processor is loaded, so the 12B model is never resident beside the DiT. With
    `enhance_prompt_image` (the first frame) the image-to-video system prompt is used. Every
    prompt is encoded in one pass over Gemma's layers, streamed unless a prompt is enhanced
    without `low_memory` (`streams_gemma`). `eval_layers` is load_text_encoder's; `on_enhanced`
    is given the rewritten prompt."""
    with_vision = enhance_first_prompt and enhance_prompt_image is not None
    text_encoder = load_text_encoder(
        gemma_dir, dtype=dtype, quantize_bits=quantize_bits, with_vision=with_vision,
        low_memory=streams_gemma(low_memory, enhance_first_prompt), eval_layers=eval_layers,
    )  # fmt: skip
    prompts = list(prompts)
    if enhance_first_prompt:
        if with_vision:
            enhanced = text_encoder.enhance_i2v(prompts[0], enhance_prompt_image, seed=enhance_prompt_seed)
        else:
            enhanced = text_encoder.enhance_t2v(prompts[0], seed=enhance_prompt_seed)
        prompts[0] = clean_response(enhanced)
        if on_enhanced is not None:
            on_enhanced(prompts[0])
    encoded = text_encoder.encode_all(prompts)
    mx.eval([hidden_states for hidden_states, _ in encoded])
    text_encoder.free()
    del text_encoder
    processor = load_embeddings_processor(checkpoint_path, dtype=dtype)
    results = []
    while encoded:  # each prompt's hidden states (0.4 GB at full size) freed once consumed
        hidden_states, mask = encoded.pop(0)
        outputs = processor(hidden_states, mask)
        mx.eval(outputs)
        del hidden_states
        results.append(outputs)
    del processor
    mx.clear_cache()
    return results

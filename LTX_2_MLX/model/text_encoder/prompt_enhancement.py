"""Prompt enhancement: Gemma rewrites a short prompt into the detailed kind LTX-2 was trained on,
with ltx-core's own system prompts (system_prompts.json, carried verbatim from ltx-core)."""

import json
from functools import lru_cache
from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextModel, KVCache

# ltx-core's GemmaTextEncoder._enhance: generate(do_sample=True, temperature=0.7) with the
# generation config transformers derives from the model config (top_k=50), seed 10.
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_K = 50
DEFAULT_SEED = 10


# ltx-pipelines' clean_response: typographic quotes and dashes to ASCII.
_UNICODE_REPLACEMENTS = str.maketrans("\u2018\u2019\u201c\u201d\u2014\u2013\u00a0\u2032\u2212", "''\"\"-- '-")


def clean_response(text: str) -> str:
    """The enhanced prompt with ASCII punctuation and without the non-letters Gemma tends to
    open with (ltx-pipelines `clean_response`)."""
    text = text.translate(_UNICODE_REPLACEMENTS)
    for i, char in enumerate(text):
        if char.isalpha():
            return text[i:]
    return text


@lru_cache(maxsize=1)
def system_prompts() -> dict[str, str]:
    return json.loads((Path(__file__).parent / "system_prompts.json").read_text())


def gemma_chat_prompt(system_prompt: str, user_text: str, bos_token: str = "<bos>", image_text: str = "") -> str:
    """Gemma 3's chat template for one system + user turn, generation prompt added: the
    system prompt opens the user turn, then the image (`image_text`, the processor's expansion
    of the image placeholder) if any, then the trimmed user text."""
    return (
        f"{bos_token}<start_of_turn>user\n{system_prompt}\n\n{image_text}{user_text.strip()}<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def image_text(boi_token: str, image_token: str, eoi_token: str, tokens_per_image: int) -> str:
    """What Gemma3Processor puts in place of the image placeholder."""
    return f"\n\n{boi_token}{image_token * tokens_per_image}{eoi_token}\n\n"


def sample_next_token(logits: mx.array, temperature: float, top_k: int | None, key: mx.array | None) -> int:
    """Greedy when temperature is 0, else a draw from softmax(logits / T) over the top k."""
    if temperature == 0:
        return int(mx.argmax(logits, axis=-1).item())
    logits = logits.astype(mx.float32) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = mx.sort(logits, axis=-1)[..., -top_k]
        logits = mx.where(logits < kth_largest, -mx.inf, logits)
    return int(mx.random.categorical(logits, key=key).item())


def generate(
    model: Gemma3TextModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = DEFAULT_SEED,
    eos_token_ids: list[int] | None = None,
    prompt_embeddings: mx.array | None = None,
    image_groups: mx.array | None = None,
) -> list[int]:
    """New token ids after `prompt_ids` (batch of one, KV-cached), stopping after an end token
    (which is included, as transformers includes it) or `max_new_tokens`. `prompt_embeddings`
    and `image_groups` carry an image merged into the prompt (see Gemma3TextModel)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1, e.g. {DEFAULT_MAX_NEW_TOKENS}.")
    eos = set(eos_token_ids if eos_token_ids is not None else model.config.eos_token_ids)
    cache = KVCache(len(model.layers))
    key = mx.random.key(seed)
    inputs = mx.array([prompt_ids], dtype=mx.int32)
    new_tokens: list[int] = []
    for _ in range(max_new_tokens):
        hidden, _ = model(
            inputs,
            cache=cache,
            output_hidden_states=False,
            input_embeddings=prompt_embeddings,
            image_groups=image_groups,
        )
        prompt_embeddings = image_groups = None
        logits = model.logits(hidden[:, -1])[0]
        key, step_key = mx.random.split(key)
        token = sample_next_token(logits, temperature, top_k, step_key)
        new_tokens.append(token)
        if token in eos:
            break
        inputs = mx.array([[token]], dtype=mx.int32)
    return new_tokens

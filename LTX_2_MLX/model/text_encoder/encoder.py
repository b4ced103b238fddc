"""The Gemma text encoder as the pipelines use it (ltx-core `GemmaTextEncoder`): tokenize, run
Gemma for every layer's hidden state, enhance prompts; plus `encode_prompt` through the
embeddings processor, and saving/loading precomputed prompt embeddings."""

import os
from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.model.text_encoder import prompt_enhancement
from LTX_2_MLX.model.text_encoder.embeddings_processor import EmbeddingsProcessor
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextModel
from LTX_2_MLX.model.text_encoder.tokenizer import GemmaTokenizer
from LTX_2_MLX.model.text_encoder.vision import Gemma3Vision, preprocess_image


class GemmaTextEncoder:
    def __init__(
        self,
        model: Gemma3TextModel,
        tokenizer: GemmaTokenizer,
        vision: Gemma3Vision | None = None,
        image_size: int | None = None,
        image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.vision = vision
        self.image_size = image_size or (vision.config.image_size if vision is not None else None)
        self.image_mean, self.image_std = image_mean, image_std

    def _require_model(self) -> Gemma3TextModel:
        if self.model is None:
            raise RuntimeError("this text encoder was freed (free()); load it again with load_text_encoder().")
        return self.model

    def tokenize(self, prompt: str) -> tuple[mx.array, mx.array]:
        """(input_ids, attention_mask), (1, max_length) each, left-padded, BOS first."""
        return self.tokenizer(prompt)

    def hidden_states(self, input_ids: mx.array, attention_mask: mx.array) -> list[mx.array]:
        """Every hidden state, embeddings first and the final-normed last layer last: L + 1
        arrays of (B, T, hidden)."""
        _, states = self._require_model()(input_ids, attention_mask, output_hidden_states=True)
        return states

    def encode(self, prompt: str) -> tuple[list[mx.array], mx.array]:
        input_ids, attention_mask = self.tokenize(prompt)
        return self.hidden_states(input_ids, attention_mask), attention_mask

    def encode_all(self, prompts: list[str]) -> list[tuple[list[mx.array], mx.array]]:
        """`encode` of each prompt, all in one pass over Gemma's layers (a streamed model reads
        its weights once for all of them); each result equals its own `encode`."""
        tokenized = [self.tokenize(prompt) for prompt in prompts]
        states = self._require_model().hidden_states_of(tokenized)
        return [(hidden, mask) for hidden, (_, mask) in zip(states, tokenized)]

    def enhance_t2v(
        self,
        prompt: str,
        max_new_tokens: int = prompt_enhancement.DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        seed: int = prompt_enhancement.DEFAULT_SEED,
        temperature: float = prompt_enhancement.DEFAULT_TEMPERATURE,
        top_k: int | None = prompt_enhancement.DEFAULT_TOP_K,
    ) -> str:
        """A detailed text-to-video prompt written by Gemma from `prompt` (temperature 0: greedy)."""
        system_prompt = system_prompt or prompt_enhancement.system_prompts()["t2v"]
        chat = prompt_enhancement.gemma_chat_prompt(system_prompt, f"user prompt: {prompt}")
        # As in the reference, the rendered chat already starts with <bos> and the tokenizer
        # prepends another (Gemma3Processor tokenizes with special tokens on).
        prompt_ids = self.tokenizer.encode(chat)
        new_ids = prompt_enhancement.generate(
            self._require_model(), prompt_ids, max_new_tokens, temperature, top_k, seed
        )
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)

    def image_prompt(self, system_prompt: str, user_text: str, image) -> tuple[list[int], mx.array, mx.array]:
        """Token ids, embeddings with the image's features merged in, and image group ids of
        a chat turn showing `image` (path, PIL image or uint8 array) before `user_text`."""
        if self.vision is None:
            raise RuntimeError(
                "image-to-video enhancement needs Gemma's vision tower: load_text_encoder(..., with_vision=True)."
            )
        model, config = self._require_model(), self.vision.config
        token = self.tokenizer.id_to_token
        placeholder = prompt_enhancement.image_text(
            token(config.boi_token_id), token(config.image_token_id), token(config.eoi_token_id),
            config.mm_tokens_per_image,
        )  # fmt: skip
        chat = prompt_enhancement.gemma_chat_prompt(system_prompt, user_text, image_text=placeholder)
        prompt_ids = self.tokenizer.encode(chat)
        ids = mx.array([prompt_ids], dtype=mx.int32)
        embeddings = model.embed(ids)
        pixels = preprocess_image(image, self.image_size, self.image_mean, self.image_std)
        features = self.vision(pixels.astype(embeddings.dtype)).astype(embeddings.dtype)
        is_image = ids == config.image_token_id
        if int(is_image.sum().item()) != features.shape[1]:
            raise ValueError(
                f"the prompt holds {int(is_image.sum().item())} image tokens for {features.shape[1]} features."
            )
        feature_index = mx.maximum(mx.cumsum(is_image.astype(mx.int32), axis=1) - 1, 0)
        embeddings = mx.where(is_image[..., None], features[0][feature_index], embeddings)
        previous = mx.concatenate([mx.zeros((1, 1), dtype=mx.bool_), is_image[:, :-1]], axis=1)
        starts = is_image & ~previous
        groups = mx.where(is_image, mx.cumsum(starts.astype(mx.int32), axis=1) - 1, -1)
        return prompt_ids, embeddings, groups

    def enhance_i2v(
        self,
        prompt: str,
        image,
        max_new_tokens: int = prompt_enhancement.DEFAULT_MAX_NEW_TOKENS,
        system_prompt: str | None = None,
        seed: int = prompt_enhancement.DEFAULT_SEED,
        temperature: float = prompt_enhancement.DEFAULT_TEMPERATURE,
        top_k: int | None = prompt_enhancement.DEFAULT_TOP_K,
    ) -> str:
        """A detailed image-to-video prompt written by Gemma from `prompt` and the first frame."""
        system_prompt = system_prompt or prompt_enhancement.system_prompts()["i2v"]
        prompt_ids, embeddings, groups = self.image_prompt(system_prompt, f"User Raw Input Prompt: {prompt}.", image)
        new_ids = prompt_enhancement.generate(
            self._require_model(), prompt_ids, max_new_tokens, temperature, top_k, seed,
            prompt_embeddings=embeddings, image_groups=groups,
        )  # fmt: skip
        return self.tokenizer.decode(new_ids, skip_special_tokens=True)

    def free(self) -> None:
        """Drop the weights (12B parameters) so they do not stay resident while denoising."""
        self.model = None
        self.vision = None
        mx.clear_cache()


def encode_prompt(
    prompt: str, text_encoder: GemmaTextEncoder, processor: EmbeddingsProcessor
) -> tuple[mx.array, mx.array | None, mx.array]:
    """(video_context, audio_context, mask) for one prompt, evaluated."""
    hidden_states, attention_mask = text_encoder.encode(prompt)
    video_context, audio_context, mask = processor(hidden_states, attention_mask)
    mx.eval(video_context, audio_context, mask)
    return video_context, audio_context, mask


PROMPT_EMBEDDINGS_FORMAT = "ltx2-mlx-prompt-embeddings"


def save_prompt_embeddings(
    path: str | Path, video_context: mx.array, audio_context: mx.array | None, mask: mx.array, prompt: str = ""
) -> None:
    """Precomputed prompt embeddings as safetensors, to pass later with `--embedding`."""
    arrays = {"video_context": video_context, "mask": mask}
    if audio_context is not None:
        arrays["audio_context"] = audio_context
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial.safetensors")
    try:  # written whole or not at all
        mx.save_safetensors(str(partial), arrays, metadata={"prompt": prompt, "format": PROMPT_EMBEDDINGS_FORMAT})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_prompt_embeddings(path: str | Path) -> tuple[mx.array, mx.array | None, mx.array]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt-embeddings file; write one with `ltx2-mlx encode-prompt`.")
    arrays, metadata = mx.load(str(path), return_metadata=True)
    if metadata.get("format") != PROMPT_EMBEDDINGS_FORMAT or "video_context" not in arrays:
        raise ValueError(
            f"{path}: not a prompt-embeddings file (it holds {sorted(arrays)}); write one with `ltx2-mlx encode-prompt`."
        )
    return arrays["video_context"], arrays.get("audio_context"), arrays["mask"]

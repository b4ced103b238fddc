"""The Gemma text encoder as the pipelines use it (ltx-core `GemmaTextEncoder`): tokenize, run
Gemma for every layer's hidden state, enhance prompts; plus `encode_prompt` through the
embeddings processor, and saving/loading precomputed prompt embeddings."""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.model.text_encoder import prompt_enhancement
from LTX_2_MLX.model.text_encoder.embeddings_processor import EmbeddingsProcessor
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextModel
from LTX_2_MLX.model.text_encoder.tokenizer import GemmaTokenizer


class GemmaTextEncoder:
    def __init__(self, model: Gemma3TextModel, tokenizer: GemmaTokenizer):
        self.model = model
        self.tokenizer = tokenizer

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

    def free(self) -> None:
        """Drop the weights (12B parameters) so they do not stay resident while denoising."""
        self.model = None
        mx.clear_cache()


def encode_prompt(
    prompt: str, text_encoder: GemmaTextEncoder, processor: EmbeddingsProcessor
) -> tuple[mx.array, mx.array | None, mx.array]:
    """(video_context, audio_context, mask) for one prompt, evaluated."""
    hidden_states, attention_mask = text_encoder.encode(prompt)
    video_context, audio_context, mask = processor(hidden_states, attention_mask)
    mx.eval(video_context, audio_context, mask)
    return video_context, audio_context, mask


def save_prompt_embeddings(
    path: str | Path, video_context: mx.array, audio_context: mx.array | None, mask: mx.array, prompt: str = ""
) -> None:
    """Precomputed prompt embeddings as safetensors, to pass later with `--embedding`."""
    arrays = {"video_context": video_context, "mask": mask}
    if audio_context is not None:
        arrays["audio_context"] = audio_context
    mx.save_safetensors(str(path), arrays, metadata={"prompt": prompt, "format": "ltx2-mlx-prompt-embeddings"})


def load_prompt_embeddings(path: str | Path) -> tuple[mx.array, mx.array | None, mx.array]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt-embeddings file; write one with --save-embedding.")
    arrays, metadata = mx.load(str(path), return_metadata=True)
    if metadata.get("format") != "ltx2-mlx-prompt-embeddings" or "video_context" not in arrays:
        raise ValueError(
            f"{path}: not a prompt-embeddings file (it holds {sorted(arrays)}); write one with --save-embedding."
        )
    return arrays["video_context"], arrays.get("audio_context"), arrays["mask"]

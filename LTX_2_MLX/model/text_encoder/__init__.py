"""LTX-2's text side: Gemma 3 (tokenizer, all-layer hidden states, prompt enhancement), the
feature extractors and the video/audio embeddings connectors."""

from LTX_2_MLX.model.text_encoder.embeddings_connector import Embeddings1DConnector, EmbeddingsConnectorConfig
from LTX_2_MLX.model.text_encoder.embeddings_processor import EmbeddingsProcessor, EmbeddingsProcessorConfig
from LTX_2_MLX.model.text_encoder.encoder import (
    GemmaTextEncoder,
    encode_prompt,
    load_prompt_embeddings,
    save_prompt_embeddings,
)
from LTX_2_MLX.model.text_encoder.gemma import Gemma3TextConfig, Gemma3TextModel
from LTX_2_MLX.model.text_encoder.tokenizer import GemmaTokenizer

__all__ = [
    "Embeddings1DConnector",
    "EmbeddingsConnectorConfig",
    "EmbeddingsProcessor",
    "EmbeddingsProcessorConfig",
    "Gemma3TextConfig",
    "Gemma3TextModel",
    "GemmaTextEncoder",
    "GemmaTokenizer",
    "encode_prompt",
    "load_prompt_embeddings",
    "save_prompt_embeddings",
]

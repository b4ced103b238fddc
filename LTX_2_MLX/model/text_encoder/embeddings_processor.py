"""Gemma hidden states → the video and audio contexts the DiT cross-attends to: feature
extractor, then one connector per stream (ltx-core `EmbeddingsProcessor.process_hidden_states`)."""

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.text_encoder.embeddings_connector import Embeddings1DConnector, EmbeddingsConnectorConfig
from LTX_2_MLX.model.text_encoder.feature_extractor import (
    FeatureExtractorV1,
    FeatureExtractorV2,
    HiddenStates,
    num_states,
    state_width,
)

# The transformer-config keys whose presence (with exactly these values) marks an LTX-2.3
# checkpoint: its caption projection sits before the connectors, inside the V2 extractor.
V2_EXPECTED_CONFIG = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}


def feature_extractor_version(transformer_config: dict) -> int:
    """1 or 2, as ltx-core's `_create_feature_extractor` decides it."""
    present = transformer_config.keys() & V2_EXPECTED_CONFIG.keys()
    if not present:
        return 1
    missing = sorted(V2_EXPECTED_CONFIG.keys() - present)
    if missing:
        raise ValueError(f"the checkpoint's transformer config is a partial LTX-2.3 config, missing {missing}.")
    wrong = [
        f"{k}={transformer_config[k]!r} (expected {V2_EXPECTED_CONFIG[k]!r})"
        for k in sorted(present)
        if transformer_config[k] != V2_EXPECTED_CONFIG[k]
    ]
    if wrong:
        raise ValueError(f"unsupported caption-projection config in the checkpoint: {', '.join(wrong)}.")
    return 2


@dataclass
class EmbeddingsProcessorConfig:
    feature_extractor_version: int
    flat_dim: int  # Gemma hidden size × (layers + 1)
    video_dim: int  # width of the video features (V1: Gemma's hidden size)
    audio_dim: int | None  # width of the audio features; None for a video-only model
    video_connector: EmbeddingsConnectorConfig
    audio_connector: EmbeddingsConnectorConfig | None

    def __post_init__(self):
        if self.feature_extractor_version not in (1, 2):
            raise ValueError(f"feature_extractor_version={self.feature_extractor_version} must be 1 or 2.")
        for name, width, connector in (
            ("video", self.video_dim, self.video_connector),
            ("audio", self.audio_dim, self.audio_connector),
        ):
            if connector is not None and connector.inner_dim != width:
                raise ValueError(
                    f"the {name} connector is {connector.num_attention_heads}×{connector.attention_head_dim}="
                    f"{connector.inner_dim} wide but its features are {width} wide: the checkpoint config's "
                    f"{name} connector sizes do not match its weights."
                )


class EmbeddingsProcessor(nn.Module):
    def __init__(self, config: EmbeddingsProcessorConfig):
        super().__init__()
        self.config = config
        if config.feature_extractor_version == 1:
            self.feature_extractor = FeatureExtractorV1(config.flat_dim, config.video_dim, is_av=True)
        else:
            self.feature_extractor = FeatureExtractorV2(config.flat_dim, config.video_dim, config.audio_dim)
        self.video_connector = Embeddings1DConnector(config.video_connector)
        if config.audio_connector is not None:
            self.audio_connector = Embeddings1DConnector(config.audio_connector)

    def __call__(
        self, hidden_states: HiddenStates, attention_mask: mx.array, padding_side: str = "left"
    ) -> tuple[mx.array, mx.array | None, mx.array]:
        """(video_context, audio_context or None, mask) from every Gemma hidden state (B, T, D)
        and the tokenizer's (B, T) attention mask. The feature extractor runs in token chunks
        (`feature_extractor.tokens_per_chunk`), each evaluated as it goes."""
        count, width = num_states(hidden_states), state_width(hidden_states)
        if width * count != self.config.flat_dim:
            raise ValueError(
                f"{count} hidden states of width {width} give {width * count} features, the checkpoint's "
                f"feature extractor takes {self.config.flat_dim}: use the Gemma 3 model this LTX-2 checkpoint was "
                "trained with (gemma-3-12b-it)."
            )
        video_features, audio_features = self.feature_extractor(hidden_states, attention_mask, padding_side)
        video, _ = self.video_connector(video_features, attention_mask)
        audio = None
        if self.config.audio_connector is not None:
            audio, _ = self.audio_connector(audio_features, attention_mask)
        # The reference's output mask is `connector_mask < 1e-6` over an additive mask: every
        # position passes (registers fill the padding, and −max also passes), so it is all ones.
        mask = mx.ones(attention_mask.shape, dtype=mx.int32)
        return video, audio, mask

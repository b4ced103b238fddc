"""Conditioning items: image/latent at a frame, keyframes, reference video (IC-LoRA), and
attention-strength masking (ltx-core `conditioning/`), and the retake time region."""

from LTX_2_MLX.conditioning.exceptions import ConditioningError
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.conditioning.types import (
    ConditioningItemAttentionStrengthWrapper,
    TemporalRegionMask,
    VideoConditionByKeyframeIndex,
    VideoConditionByLatentIndex,
    VideoConditionByReferenceLatent,
)

__all__ = [
    "ConditioningError",
    "ConditioningItem",
    "ConditioningItemAttentionStrengthWrapper",
    "TemporalRegionMask",
    "VideoConditionByKeyframeIndex",
    "VideoConditionByLatentIndex",
    "VideoConditionByReferenceLatent",
]

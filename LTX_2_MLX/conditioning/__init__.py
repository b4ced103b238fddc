"""Conditioning items: image/latent at a frame, keyframes, reference video (IC-LoRA), and
attention-strength masking (ltx-core `conditioning/`)."""

from LTX_2_MLX.conditioning.exceptions import ConditioningError
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.conditioning.types import (
    ConditioningItemAttentionStrengthWrapper,
    VideoConditionByKeyframeIndex,
    VideoConditionByLatentIndex,
    VideoConditionByReferenceLatent,
)

__all__ = [
    "ConditioningError",
    "ConditioningItem",
    "ConditioningItemAttentionStrengthWrapper",
    "VideoConditionByKeyframeIndex",
    "VideoConditionByLatentIndex",
    "VideoConditionByReferenceLatent",
]

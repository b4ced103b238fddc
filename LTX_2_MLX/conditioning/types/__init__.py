from LTX_2_MLX.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper
from LTX_2_MLX.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from LTX_2_MLX.conditioning.types.latent_cond import VideoConditionByLatentIndex
from LTX_2_MLX.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent

__all__ = [
    "ConditioningItemAttentionStrengthWrapper",
    "VideoConditionByKeyframeIndex",
    "VideoConditionByLatentIndex",
    "VideoConditionByReferenceLatent",
]

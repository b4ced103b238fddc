from LTX_2_MLX.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper
from LTX_2_MLX.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from LTX_2_MLX.conditioning.types.latent_cond import VideoConditionByLatentIndex
from LTX_2_MLX.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent
from LTX_2_MLX.conditioning.types.temporal_region_mask import TemporalRegionMask

__all__ = [
    "ConditioningItemAttentionStrengthWrapper",
    "TemporalRegionMask",
    "VideoConditionByKeyframeIndex",
    "VideoConditionByLatentIndex",
    "VideoConditionByReferenceLatent",
]

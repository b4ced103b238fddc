"""Regenerate only a time range (ltx-pipelines' retake pipeline keeps this item in retake.py)."""

from dataclasses import dataclass, replace

import mlx.core as mx

from LTX_2_MLX.components.patchifiers import get_pixel_coords
from LTX_2_MLX.components.tools import LatentTools
from LTX_2_MLX.components.types import LatentState, SpatioTemporalScaleFactors
from LTX_2_MLX.conditioning.item import ConditioningItem


@dataclass(frozen=True)
class TemporalRegionMask(ConditioningItem):
    """Denoise mask 1 for tokens overlapping [start_time, end_time) seconds, 0 elsewhere, so
    only that region is regenerated and the rest kept from the initial latent. Works for video
    (token times from the causal pixel-frame bounds and `fps`) and audio (token times are
    already seconds). Apply it before any item that appends tokens."""

    start_time: float
    end_time: float
    fps: float

    def apply_to(self, latent_state: LatentState, latent_tools: LatentTools) -> LatentState:
        coords = latent_tools.patchifier.get_patch_grid_bounds(latent_tools.target_shape)
        if coords.shape[1] == 1:  # audio: (B, 1, T, 2) seconds
            t_start, t_end = coords[:, 0, :, 0], coords[:, 0, :, 1]
        else:  # video: (B, 3, T, 2) latent bounds
            scale_factors = getattr(latent_tools, "scale_factors", SpatioTemporalScaleFactors.default())
            pixel_bounds = get_pixel_coords(coords, scale_factors, causal_fix=getattr(latent_tools, "causal_fix", True))
            seconds = pixel_bounds[0, 0] / self.fps
            t_start, t_end = seconds[:, 0], seconds[:, 1]
        in_region = mx.logical_and(t_end > self.start_time, t_start < self.end_time)

        mask = latent_state.denoise_mask
        if mask.shape[1] != in_region.shape[-1]:
            raise ValueError(
                f"TemporalRegionMask covers the {in_region.shape[-1]} target tokens but the state has "
                f"{mask.shape[1]}: apply it before conditioning items that append tokens"
            )
        region = in_region.astype(mask.dtype)
        if mask.ndim == 3:
            region = region[..., None]
        return replace(latent_state, denoise_mask=mx.broadcast_to(region, mask.shape))

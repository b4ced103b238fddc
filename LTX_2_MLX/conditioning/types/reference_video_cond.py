"""Reference video conditioning for IC-LoRA."""

import mlx.core as mx

from LTX_2_MLX.components.patchifiers import get_pixel_coords
from LTX_2_MLX.components.tools import VideoLatentTools
from LTX_2_MLX.components.types import LatentState, VideoLatentShape
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.conditioning.types.keyframe_cond import append_tokens


class VideoConditionByReferenceLatent(ConditioningItem):
    """Appends a reference video's latent (B, C, F, H, W) as extra tokens, the way IC-LoRAs
    were trained (reference and target tokens side by side).

    downscale_factor: target / reference resolution (a LoRA trained with half-resolution
    references uses 2); spatial positions are multiplied by it to land in target coordinates.
    strength: 1 keeps the reference clean, 0 lets it be denoised.
    """

    def __init__(self, latent: mx.array, downscale_factor: int = 1, strength: float = 1.0):
        self.latent = latent
        self.downscale_factor = downscale_factor
        self.strength = strength

    def apply_to(self, latent_state: LatentState, latent_tools: VideoLatentTools) -> LatentState:
        tokens = latent_tools.patchifier.patchify(self.latent)
        latent_coords = latent_tools.patchifier.get_patch_grid_bounds(
            output_shape=VideoLatentShape.from_shape(self.latent.shape)
        )
        positions = get_pixel_coords(latent_coords, latent_tools.scale_factors, causal_fix=latent_tools.causal_fix)
        positions = positions.astype(mx.float32)
        time = positions[:, :1] / latent_tools.fps
        space = positions[:, 1:] * self.downscale_factor if self.downscale_factor != 1 else positions[:, 1:]
        positions = mx.concatenate([time, space], axis=1)

        return append_tokens(latent_state, latent_tools, tokens, positions, self.strength, self.latent.dtype)

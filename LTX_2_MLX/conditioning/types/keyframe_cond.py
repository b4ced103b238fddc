import mlx.core as mx

from LTX_2_MLX.components.patchifiers import get_pixel_coords
from LTX_2_MLX.components.tools import VideoLatentTools
from LTX_2_MLX.components.types import LatentState, VideoLatentShape
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.conditioning.mask_utils import update_attention_mask


def append_tokens(
    latent_state: LatentState,
    latent_tools: VideoLatentTools,
    tokens: mx.array,
    positions: mx.array,
    strength: float,
    dtype: mx.Dtype,
) -> LatentState:
    """The state with conditioning tokens appended at the end of the sequence, denoised at
    1 - strength, the self-attention mask grown to cover them."""
    denoise_mask = mx.full((*tokens.shape[:2], 1), 1.0 - strength, dtype=dtype)
    attention_mask = update_attention_mask(
        latent_state=latent_state,
        attention_mask=None,
        num_noisy_tokens=latent_tools.target_shape.token_count(),
        num_new_tokens=tokens.shape[1],
        batch_size=tokens.shape[0],
        dtype=dtype,
    )
    return LatentState(
        latent=mx.concatenate([latent_state.latent, tokens.astype(latent_state.latent.dtype)], axis=1),
        denoise_mask=mx.concatenate([latent_state.denoise_mask, denoise_mask], axis=1),
        positions=mx.concatenate([latent_state.positions, positions], axis=2),
        clean_latent=mx.concatenate(
            [latent_state.clean_latent, tokens.astype(latent_state.clean_latent.dtype)], axis=1
        ),
        attention_mask=attention_mask,
    )


class VideoConditionByKeyframeIndex(ConditioningItem):
    """Keyframes (B, C, F, H, W) placed at pixel frame `frame_idx`: their tokens are appended
    with positions offset by frame_idx, at denoise strength 1 - strength. Wrap in
    `ConditioningItemAttentionStrengthWrapper` to weight their attention."""

    def __init__(self, keyframes: mx.array, frame_idx: int, strength: float):
        self.keyframes = keyframes
        self.frame_idx = frame_idx
        self.strength = strength

    def apply_to(self, latent_state: LatentState, latent_tools: VideoLatentTools) -> LatentState:
        tokens = latent_tools.patchifier.patchify(self.keyframes)
        latent_coords = latent_tools.patchifier.get_patch_grid_bounds(
            output_shape=VideoLatentShape.from_shape(self.keyframes.shape)
        )
        # Only a keyframe at frame 0 went through the causal VAE's single-frame first slot.
        positions = get_pixel_coords(
            latent_coords,
            latent_tools.scale_factors,
            causal_fix=latent_tools.causal_fix if self.frame_idx == 0 else False,
        )
        time = (positions[:, :1] + self.frame_idx).astype(mx.float32) / latent_tools.fps
        positions = mx.concatenate([time, positions[:, 1:].astype(mx.float32)], axis=1)

        return append_tokens(latent_state, latent_tools, tokens, positions, self.strength, self.keyframes.dtype)

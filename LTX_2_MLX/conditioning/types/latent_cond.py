import mlx.core as mx

from LTX_2_MLX.components.tools import LatentTools
from LTX_2_MLX.components.types import LatentState
from LTX_2_MLX.conditioning.exceptions import ConditioningError
from LTX_2_MLX.conditioning.item import ConditioningItem


def _replace_tokens(tokens_all: mx.array, start: int, stop: int, new: mx.array) -> mx.array:
    return mx.concatenate([tokens_all[:, :start], new.astype(tokens_all.dtype), tokens_all[:, stop:]], axis=1)


class VideoConditionByLatentIndex(ConditioningItem):
    """Image-to-video: replace the tokens of latent frames [latent_idx, latent_idx + F) by the
    given latent (B, C, F, H, W) and keep them at denoise strength 1 - strength."""

    def __init__(self, latent: mx.array, strength: float, latent_idx: int):
        self.latent = latent
        self.strength = strength
        self.latent_idx = latent_idx

    def apply_to(self, latent_state: LatentState, latent_tools: LatentTools) -> LatentState:
        cond_batch, cond_channels, cond_frames, cond_height, cond_width = self.latent.shape
        tgt_batch, tgt_channels, tgt_frames, tgt_height, tgt_width = latent_tools.target_shape.to_shape()
        if (cond_batch, cond_channels, cond_height, cond_width) != (tgt_batch, tgt_channels, tgt_height, tgt_width):
            raise ConditioningError(
                f"Can't apply image conditioning of shape {tuple(self.latent.shape)} to a latent of shape "
                f"{latent_tools.target_shape.to_shape()}: encode the image at the video's resolution so "
                "batch, channels, height and width match."
            )
        if self.latent_idx < 0 or self.latent_idx + cond_frames > tgt_frames:
            raise ConditioningError(
                f"latent_idx={self.latent_idx} with {cond_frames} frame(s) does not fit in {tgt_frames} latent "
                f"frames: use 0 <= latent_idx <= {tgt_frames - cond_frames}"
            )

        tokens = latent_tools.patchifier.patchify(self.latent)
        start = latent_tools.patchifier.get_token_count(latent_tools.target_shape._replace(frames=self.latent_idx))
        stop = start + tokens.shape[1]
        mask = latent_state.denoise_mask
        strength_mask = mx.full((mask.shape[0], stop - start, *mask.shape[2:]), 1.0 - self.strength, dtype=mask.dtype)
        return LatentState(
            latent=_replace_tokens(latent_state.latent, start, stop, tokens),
            denoise_mask=_replace_tokens(mask, start, stop, strength_mask),
            positions=latent_state.positions,
            clean_latent=_replace_tokens(latent_state.clean_latent, start, stop, tokens),
            attention_mask=latent_state.attention_mask,
        )

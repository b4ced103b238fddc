from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.tools import LatentTools
from LTX_2_MLX.components.types import LatentState
from LTX_2_MLX.conditioning.item import ConditioningItem
from LTX_2_MLX.conditioning.mask_utils import update_attention_mask


class ConditioningItemAttentionStrengthWrapper(ConditioningItem):
    """Runs any token-appending conditioning item, then weights the attention between its new
    tokens and the noisy tokens by `attention_mask`: a float in [0, 1] for all of them, or a
    (B, M) / (M,) array over the M appended tokens for spatial control."""

    def __init__(self, conditioning: ConditioningItem, attention_mask: float | mx.array):
        self.conditioning = conditioning
        self.attention_mask = attention_mask

    def apply_to(self, latent_state: LatentState, latent_tools: LatentTools) -> LatentState:
        new_state = self.conditioning.apply_to(latent_state, latent_tools)
        num_new_tokens = new_state.latent.shape[1] - latent_state.latent.shape[1]
        if num_new_tokens == 0:
            return new_state
        # The block layout is computed from the state before the inner item appended.
        attention_mask = update_attention_mask(
            latent_state=latent_state,
            attention_mask=self.attention_mask,
            num_noisy_tokens=latent_tools.target_shape.token_count(),
            num_new_tokens=num_new_tokens,
            batch_size=new_state.latent.shape[0],
            dtype=new_state.latent.dtype,
        )
        return replace(new_state, attention_mask=attention_mask)

from typing import Protocol

from LTX_2_MLX.components.tools import LatentTools
from LTX_2_MLX.components.types import LatentState


class ConditioningItem(Protocol):
    """Changes a patchified latent state before noising: replaces tokens, sets their denoise
    strength, or appends tokens. Appended tokens go at the END of the sequence only, so that
    `LatentTools.clear_conditioning` can cut them off after denoising."""

    def apply_to(self, latent_state: LatentState, latent_tools: LatentTools) -> LatentState: ...

"""Building, patchifying and trimming latent states (ltx-core `tools.py`)."""

from dataclasses import dataclass, replace
from typing import Protocol

import mlx.core as mx

from LTX_2_MLX.components.patchifiers import AudioPatchifier, Patchifier, VideoLatentPatchifier, get_pixel_coords
from LTX_2_MLX.components.types import (
    AudioLatentShape,
    LatentState,
    SpatioTemporalScaleFactors,
    VideoLatentShape,
)

DEFAULT_SCALE_FACTORS = SpatioTemporalScaleFactors.default()


def _check_initial_latent(initial_latent: mx.array | None, target_shape, dtype: mx.Dtype) -> mx.array:
    if initial_latent is None:
        return mx.zeros(target_shape.to_shape(), dtype=dtype)
    if tuple(initial_latent.shape) != target_shape.to_shape():
        raise ValueError(
            f"initial latent has shape {tuple(initial_latent.shape)}, expected {target_shape.to_shape()} "
            "(check the resolution / number of frames it was encoded at)"
        )
    return initial_latent


class LatentTools(Protocol):
    patchifier: Patchifier
    target_shape: VideoLatentShape | AudioLatentShape

    def create_initial_state(self, dtype: mx.Dtype, initial_latent: mx.array | None = None) -> LatentState: ...

    def patchify(self, latent_state: LatentState) -> LatentState:
        if tuple(latent_state.latent.shape) != self.target_shape.to_shape():
            raise ValueError(
                f"latent has shape {tuple(latent_state.latent.shape)}, expected {self.target_shape.to_shape()}"
            )
        return replace(
            latent_state,
            latent=self.patchifier.patchify(latent_state.latent),
            denoise_mask=self.patchifier.patchify(latent_state.denoise_mask),
            clean_latent=self.patchifier.patchify(latent_state.clean_latent),
        )

    def unpatchify(self, latent_state: LatentState) -> LatentState:
        return replace(
            latent_state,
            latent=self.patchifier.unpatchify(latent_state.latent, output_shape=self.target_shape),
            denoise_mask=self.patchifier.unpatchify(
                latent_state.denoise_mask, output_shape=self.target_shape.mask_shape()
            ),
            clean_latent=self.patchifier.unpatchify(latent_state.clean_latent, output_shape=self.target_shape),
        )

    def clear_conditioning(self, latent_state: LatentState) -> LatentState:
        """Drop the tokens conditioning items appended after the target's own tokens (which is
        why conditioning may only append at the end), reset the mask, drop attention masking."""
        num_tokens = self.patchifier.get_token_count(self.target_shape)
        return LatentState(
            latent=latent_state.latent[:, :num_tokens],
            denoise_mask=mx.ones_like(latent_state.denoise_mask)[:, :num_tokens],
            positions=latent_state.positions[:, :, :num_tokens],
            clean_latent=latent_state.clean_latent[:, :num_tokens],
            attention_mask=None,
        )


@dataclass(frozen=True)
class VideoLatentTools(LatentTools):
    """Video states: positions are (time in seconds, height px, width px) per token."""

    patchifier: VideoLatentPatchifier
    target_shape: VideoLatentShape
    fps: float
    scale_factors: SpatioTemporalScaleFactors = DEFAULT_SCALE_FACTORS
    causal_fix: bool = True

    def create_initial_state(self, dtype: mx.Dtype, initial_latent: mx.array | None = None) -> LatentState:
        initial_latent = _check_initial_latent(initial_latent, self.target_shape, dtype)
        denoise_mask = mx.ones(self.target_shape.mask_shape().to_shape(), dtype=mx.float32)
        latent_coords = self.patchifier.get_patch_grid_bounds(output_shape=self.target_shape)
        positions = get_pixel_coords(latent_coords, self.scale_factors, causal_fix=self.causal_fix).astype(mx.float32)
        positions = mx.concatenate([positions[:, :1] / self.fps, positions[:, 1:]], axis=1)
        return self.patchify(
            LatentState(
                latent=initial_latent,
                denoise_mask=denoise_mask,
                positions=positions.astype(dtype),
                clean_latent=initial_latent,
            )
        )


@dataclass(frozen=True)
class AudioLatentTools(LatentTools):
    """Audio states: positions are [start, end) seconds per latent frame."""

    patchifier: AudioPatchifier
    target_shape: AudioLatentShape

    def create_initial_state(self, dtype: mx.Dtype, initial_latent: mx.array | None = None) -> LatentState:
        initial_latent = _check_initial_latent(initial_latent, self.target_shape, dtype)
        denoise_mask = mx.ones(self.target_shape.mask_shape().to_shape(), dtype=mx.float32)
        positions = self.patchifier.get_patch_grid_bounds(output_shape=self.target_shape)
        return self.patchify(
            LatentState(
                latent=initial_latent, denoise_mask=denoise_mask, positions=positions, clean_latent=initial_latent
            )
        )

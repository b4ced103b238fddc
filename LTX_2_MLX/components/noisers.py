"""Noising a latent state before denoising (ltx-core `components/noisers.py`).

`GaussianNoiser` draws from an MLX key; `InjectedNoiser` hands out given arrays in call order,
so a run can start from exactly the noise another implementation drew.
"""

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

import mlx.core as mx

from LTX_2_MLX.components.types import LatentState


class Noiser(Protocol):
    def __call__(self, latent_state: LatentState, noise_scale: float = 1.0) -> LatentState: ...


def add_noise(latent_state: LatentState, noise: mx.array, noise_scale: float | mx.array = 1.0) -> LatentState:
    """Blend noise in where the denoise mask says so: mask·scale of noise, the rest latent."""
    if tuple(noise.shape) != tuple(latent_state.latent.shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the latent {tuple(latent_state.latent.shape)}")
    dtype = latent_state.latent.dtype
    scaled_mask = latent_state.denoise_mask * noise_scale
    latent = noise.astype(dtype) * scaled_mask + latent_state.latent * (1 - scaled_mask)
    return replace(latent_state, latent=latent.astype(dtype))


class GaussianNoiser(Noiser):
    """Standard-normal noise from `key` (an int seed or an mx.random.key); each call uses the
    next split of the key, so successive calls (video, then audio) get independent noise."""

    def __init__(self, key: int | mx.array):
        self._key = mx.random.key(key) if isinstance(key, int) else key

    def next_key(self) -> mx.array:
        self._key, key = mx.random.split(self._key)
        return key

    def __call__(self, latent_state: LatentState, noise_scale: float | mx.array = 1.0) -> LatentState:
        noise = mx.random.normal(latent_state.latent.shape, dtype=latent_state.latent.dtype, key=self.next_key())
        return add_noise(latent_state, noise, noise_scale)


class InjectedNoiser(Noiser):
    """Uses the given noise arrays, one per call, in order (e.g. [video_noise, audio_noise])."""

    def __init__(self, noises: Iterable[mx.array]):
        self._noises = list(noises)
        self._used = 0

    def __call__(self, latent_state: LatentState, noise_scale: float | mx.array = 1.0) -> LatentState:
        if self._used >= len(self._noises):
            raise ValueError(
                f"InjectedNoiser was given {len(self._noises)} noise arrays and all are used; "
                "pass one per noised stream (video, then audio)"
            )
        noise = self._noises[self._used]
        self._used += 1
        return add_noise(latent_state, noise, noise_scale)

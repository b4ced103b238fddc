"""One step of the sampler from sigmas[i] to sigmas[i + 1] (ltx-core `components/diffusion_steps.py`).

`to_velocity` (in ltx-core's `utils.py`) lives here, next to its user; its inverse
`to_denoised` is in `model/transformer/model.py`, next to the X0 model.
"""

from typing import Protocol

import mlx.core as mx
import numpy as np


def to_velocity(sample: mx.array, sigma: float | mx.array, denoised_sample: mx.array) -> mx.array:
    """Velocity (sample - denoised) / sigma, computed in float32."""
    if not isinstance(sigma, mx.array) or sigma.size == 1:
        sigma = float(sigma.item() if isinstance(sigma, mx.array) else sigma)
        if sigma == 0:
            raise ValueError("sigma=0 has no velocity: the sample is already clean")
    velocity = (sample.astype(mx.float32) - denoised_sample.astype(mx.float32)) / sigma
    return velocity.astype(sample.dtype)


class DiffusionStepProtocol(Protocol):
    def step(
        self, sample: mx.array, denoised_sample: mx.array, sigmas: mx.array, step_index: int, **kwargs
    ) -> mx.array: ...


class EulerDiffusionStep(DiffusionStepProtocol):
    """First-order step: sample + velocity * (sigma_next - sigma)."""

    def step(
        self, sample: mx.array, denoised_sample: mx.array, sigmas: mx.array, step_index: int, **_kwargs
    ) -> mx.array:
        sigma = sigmas[step_index]
        dt = sigmas[step_index + 1] - sigma
        velocity = to_velocity(sample, sigma, denoised_sample)
        return (sample.astype(mx.float32) + velocity.astype(mx.float32) * dt).astype(sample.dtype)


def _array_module(value):
    """numpy for host-side scalars (float64 coefficients), mlx for arrays (per-token sigmas)."""
    return mx if isinstance(value, mx.array) else np


class Res2sDiffusionStep(DiffusionStepProtocol):
    """Stochastic step of the res_2s sampler: a deterministic move to sigma_down mixed with
    fresh `noise` of strength sigma_up, keeping the marginal variance (variance preserving).

    The noise is always passed in explicitly (see `pipelines.denoising` for where it comes
    from), so a test can hand both implementations the same draw. `sigmas` may be host values
    (numpy float64: the coefficients are then computed in float64, as the reference does) or an
    mx.array (e.g. per-token sigmas).
    """

    @staticmethod
    def get_sde_coeff(sigma_next, sigma_up=None, sigma_down=None, sigma_max=None):
        """(alpha_ratio, sigma_down, sigma_up) from either sigma_down or sigma_up."""
        xp = _array_module(sigma_next)
        if sigma_down is not None:
            alpha_ratio = (1 - sigma_next) / (1 - sigma_down)
            sigma_up = xp.sqrt(xp.maximum(sigma_next**2 - sigma_down**2 * alpha_ratio**2, 0))
        elif sigma_up is not None:
            sigma_up = xp.minimum(sigma_up, sigma_next * 0.9999)  # keeps the sqrt below real
            sigma_max = sigma_max if sigma_max is not None else xp.ones_like(sigma_next)
            sigma_signal = sigma_max - sigma_next
            sigma_residual = xp.sqrt(xp.maximum(sigma_next**2 - sigma_up**2, 0))
            alpha_ratio = sigma_signal + sigma_residual
            sigma_down = sigma_residual / alpha_ratio
        else:
            alpha_ratio = xp.ones_like(sigma_next)
            sigma_down = sigma_next
            sigma_up = xp.zeros_like(sigma_next)

        sigma_up = xp.nan_to_num(sigma_up, nan=0.0)
        sigma_down = xp.where(xp.isnan(sigma_down), sigma_next, sigma_down)
        alpha_ratio = xp.nan_to_num(alpha_ratio, nan=1.0)
        return alpha_ratio, sigma_down, sigma_up

    def step(
        self,
        sample: mx.array,
        denoised_sample: mx.array,
        sigmas,
        step_index: int,
        noise: mx.array,
    ) -> mx.array:
        sigma = sigmas[step_index]
        sigma_next = sigmas[step_index + 1]
        alpha_ratio, sigma_down, sigma_up = self.get_sde_coeff(sigma_next, sigma_up=sigma_next * 0.5)
        xp = _array_module(sigma_next)
        if bool(xp.any(sigma_up == 0)) or bool(xp.any(sigma_next == 0)):
            return denoised_sample

        if xp is np:
            # Host scalars: fold them into Python floats so the array math stays in the
            # arrays' dtype.
            sigma, sigma_next = float(sigma), float(sigma_next)
            alpha_ratio, sigma_down, sigma_up = float(alpha_ratio), float(sigma_down), float(sigma_up)
        eps_next = (sample - denoised_sample) / (sigma - sigma_next)
        denoised_next = sample - sigma * eps_next
        x_noised = alpha_ratio * (denoised_next + sigma_down * eps_next) + sigma_up * noise
        return x_noised.astype(denoised_sample.dtype)

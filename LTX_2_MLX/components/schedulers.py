"""Sigma schedules (ltx-core `components/schedulers.py`, distilled lists from ltx-pipelines).

Schedules are a handful of numbers computed once on the host. They are computed with numpy in
float32, in the reference's operation order: at real token counts the reference's float32
rounding moves sigmas by up to 1e-4 away from exact math, and matching it bit for bit keeps
the whole trajectory comparable. The result is returned as an mx.array (float32).
"""

import math
from typing import Protocol

import mlx.core as mx
import numpy as np

BASE_SHIFT_ANCHOR = 1024
MAX_SHIFT_ANCHOR = 4096

# Distilled-model schedules, tuned with the distillation (ltx-pipelines `utils/constants.py`).
DISTILLED_SIGMA_VALUES = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
# Stage 2 (refinement after the spatial upsampler) starts from the tail of the stage-1 list.
STAGE_2_DISTILLED_SIGMA_VALUES = [0.909375, 0.725, 0.421875, 0.0]


class SchedulerProtocol(Protocol):
    def execute(self, steps: int, **kwargs) -> mx.array: ...


def _linspace_float32(start: float, end: float, num: int) -> np.ndarray:
    """float32 linspace rounded like PyTorch's CPU kernel: a float32 step, each value computed
    from the nearer end point with a single rounding (multiply-add)."""
    if num == 1:
        return np.array([start], dtype=np.float32)
    step = np.float64((np.float32(end) - np.float32(start)) / np.float32(num - 1))
    index = np.arange(num, dtype=np.float64)
    from_start = np.float64(np.float32(start)) + step * index
    from_end = np.float64(np.float32(end)) - step * (num - 1 - index)
    return np.where(index < num // 2, from_start, from_end).astype(np.float32)


class LTX2Scheduler(SchedulerProtocol):
    """Default LTX-2 schedule: 1 → 0 in `steps` steps, shifted towards high noise the more
    tokens the latent has, then stretched so that the last non-zero sigma equals `terminal`.

    `latent` is only used for its token count, prod(shape[2:]) of a (B, C, F, H, W) latent.
    """

    def execute(
        self,
        steps: int,
        latent: mx.array | None = None,
        max_shift: float = 2.05,
        base_shift: float = 0.95,
        stretch: bool = True,
        terminal: float = 0.1,
        default_number_of_tokens: int = MAX_SHIFT_ANCHOR,
        **_kwargs,
    ) -> mx.array:
        if steps < 1:
            raise ValueError(f"steps={steps} must be at least 1")
        tokens = math.prod(latent.shape[2:]) if latent is not None else default_number_of_tokens
        f32 = np.float32
        sigmas = _linspace_float32(1.0, 0.0, steps + 1)

        slope = (max_shift - base_shift) / (MAX_SHIFT_ANCHOR - BASE_SHIFT_ANCHOR)
        intercept = base_shift - slope * BASE_SHIFT_ANCHOR
        exp_shift = f32(math.exp(tokens * slope + intercept))

        # exp(shift) / (exp(shift) + 1/sigma - 1); the reference divides by taking the
        # reciprocal and multiplying, and so does this.
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = (f32(1.0) / sigmas).astype(f32) - f32(1.0)
            shifted = (f32(1.0) / (exp_shift + odds).astype(f32)).astype(f32) * exp_shift
        sigmas = np.where(sigmas != 0, shifted, f32(0.0)).astype(f32)

        if stretch:
            non_zero = sigmas != 0
            one_minus_z = (f32(1.0) - sigmas[non_zero]).astype(f32)
            scale_factor = (one_minus_z[-1] / f32(1.0 - terminal)).astype(f32)
            if scale_factor == 0:
                # The last non-zero sigma rounded to exactly 1 (steps=1): there is nothing to
                # stretch, and the reference would return NaN.
                raise ValueError(
                    f"steps={steps} leaves no sigma below 1 to stretch to terminal={terminal}: "
                    "use more steps or stretch=False"
                )
            sigmas[non_zero] = f32(1.0) - (one_minus_z / scale_factor).astype(f32)

        return mx.array(sigmas.astype(np.float32))


class LinearQuadraticScheduler(SchedulerProtocol):
    """Linear steps down to `threshold_noise`, then a quadratic curve to the end."""

    def execute(
        self, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None, **_kwargs
    ) -> mx.array:
        if steps < 1:
            raise ValueError(f"steps={steps} must be at least 1")
        if steps == 1:
            return mx.array([1.0, 0.0], dtype=mx.float32)
        if linear_steps is None:
            linear_steps = steps // 2
        linear_schedule = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        threshold_noise_step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_schedule = []
        if quadratic_steps > 0:
            quadratic_coef = threshold_noise_step_diff / (linear_steps * quadratic_steps**2)
            linear_coef = threshold_noise / linear_steps - 2 * threshold_noise_step_diff / (quadratic_steps**2)
            const = quadratic_coef * (linear_steps**2)
            quadratic_schedule = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = linear_schedule + quadratic_schedule + [1.0]
        return mx.array(np.array([1.0 - x for x in schedule], dtype=np.float32))


class BetaScheduler(SchedulerProtocol):
    """Timesteps spaced by the quantiles of a Beta(alpha, beta) distribution over a flux-style
    shifted schedule (https://arxiv.org/abs/2407.12173). Coinciding timesteps are merged, so
    fewer than `steps` + 1 sigmas may come back. Needs scipy for the Beta quantiles."""

    shift = 2.37
    timesteps_length = 10000

    def execute(self, steps: int, alpha: float = 0.6, beta: float = 0.6, **_kwargs) -> mx.array:
        try:
            from scipy.stats import beta as beta_distribution
        except ImportError:
            raise ImportError("BetaScheduler needs scipy for the Beta quantiles: pip install scipy") from None
        if steps < 1:
            raise ValueError(f"steps={steps} must be at least 1")
        model_sigmas = _model_sampling_sigmas(self.shift, self.timesteps_length)
        total_timesteps = len(model_sigmas) - 1
        quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
        timesteps = np.rint(beta_distribution.ppf(quantiles, alpha, beta) * total_timesteps).tolist()
        timesteps = list(dict.fromkeys(timesteps))
        sigmas = [float(model_sigmas[int(t)]) for t in timesteps] + [0.0]
        return mx.array(np.array(sigmas, dtype=np.float32))


def flux_time_shift(mu: float, sigma: float, t: float) -> float:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def _model_sampling_sigmas(shift: float, timesteps_length: int) -> np.ndarray:
    """`flux_time_shift(shift, 1, t)` for t = 1/L .. 1, in float32 with the reference's
    operation order (reciprocal, then multiply)."""
    f32 = np.float32
    timesteps = np.arange(1, timesteps_length + 1, dtype=f32) / f32(timesteps_length)
    exp_shift = f32(math.exp(shift))
    odds = (f32(1.0) / timesteps).astype(f32) - f32(1.0)
    return ((f32(1.0) / (exp_shift + odds).astype(f32)).astype(f32) * exp_shift).astype(f32)


def distilled_sigmas(stage: int = 1) -> mx.array:
    """The fixed schedule of the distilled model: stage 1 (8 steps) or stage 2 (3 steps)."""
    if stage not in (1, 2):
        raise ValueError(f"stage={stage} must be 1 or 2")
    values = DISTILLED_SIGMA_VALUES if stage == 1 else STAGE_2_DISTILLED_SIGMA_VALUES
    return mx.array(np.array(values, dtype=np.float32))

"""Guidance: how the conditional prediction is pushed away from unconditional / perturbed
ones (ltx-core `components/guiders.py`).

The simple guiders return a delta to add to the conditional prediction, so several can be
chained. `MultiModalGuider` combines CFG, STG and modality guidance for one stream (video or
audio) of the audio-video model; `MultiModalGuiderFactory` picks its parameters by sigma.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import mlx.core as mx


class GuiderProtocol(Protocol):
    scale: float

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array: ...

    def enabled(self) -> bool: ...


def projection_coef(to_project: mx.array, project_onto: mx.array) -> mx.array:
    """Per batch row, <to_project, project_onto> / |project_onto|², shaped (B, 1, ..., 1).

    The reference returns (B, 1), which broadcasts against (B, T, C) only when B is 1; the
    trailing ones make it per row for any batch, and change nothing for B = 1.
    """
    batch_size = to_project.shape[0]
    positive_flat = to_project.reshape(batch_size, -1)
    negative_flat = project_onto.reshape(batch_size, -1)
    dot_product = mx.sum(positive_flat * negative_flat, axis=1)
    squared_norm = mx.sum(negative_flat**2, axis=1) + 1e-8
    return (dot_product / squared_norm).reshape(batch_size, *([1] * (to_project.ndim - 1)))


def _norm_last_three(x: mx.array) -> mx.array:
    return mx.sqrt(mx.sum(x * x, axis=(-1, -2, -3), keepdims=True))


@dataclass(frozen=True)
class CFGGuider(GuiderProtocol):
    """Classifier-free guidance: (scale - 1) * (cond - uncond). scale 1 is no guidance."""

    scale: float

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        return (self.scale - 1) * (cond - uncond)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class CFGStarRescalingGuider(GuiderProtocol):
    """CFG against the unconditional prediction first projected onto the conditional one
    (rescaled to its norm), so guidance moves along the conditioning direction."""

    scale: float

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        rescaled_neg = projection_coef(cond, uncond) * uncond
        return (self.scale - 1) * (cond - rescaled_neg)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass(frozen=True)
class STGGuider(GuiderProtocol):
    """Spatio-temporal guidance: scale * (cond - perturbed), where the perturbed prediction
    skipped some self-attention. scale 0 is no guidance."""

    scale: float

    def delta(self, pos_denoised: mx.array, perturbed_denoised: mx.array) -> mx.array:
        return self.scale * (pos_denoised - perturbed_denoised)

    def enabled(self) -> bool:
        return self.scale != 0.0


def _apg_direction(guidance: mx.array, cond: mx.array, eta: float, norm_threshold: float) -> mx.array:
    """Clip the guidance norm to norm_threshold (if > 0), then weight its component parallel to
    cond by eta and keep the orthogonal one."""
    if norm_threshold > 0:
        guidance_norm = _norm_last_three(guidance)
        guidance = guidance * mx.minimum(mx.ones_like(guidance), norm_threshold / guidance_norm)
    g_parallel = projection_coef(guidance, cond) * cond
    g_orth = guidance - g_parallel
    return g_parallel * eta + g_orth


@dataclass(frozen=True)
class LtxAPGGuider(GuiderProtocol):
    """Adaptive projected guidance: CFG whose component parallel to the conditional
    prediction is weighted by `eta`, optionally norm-clipped at `norm_threshold`."""

    scale: float
    eta: float = 1.0
    norm_threshold: float = 0.0

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        return _apg_direction(cond - uncond, cond, self.eta, self.norm_threshold) * (self.scale - 1)

    def enabled(self) -> bool:
        return self.scale != 1.0


@dataclass
class LegacyStatefulAPGGuider(GuiderProtocol):
    """APG with a running average of the guidance over steps (momentum). Holds state: use one
    instance per denoising run and per stream."""

    scale: float
    eta: float
    norm_threshold: float = 5.0
    momentum: float = 0.0
    running_avg: mx.array | None = None

    def delta(self, cond: mx.array, uncond: mx.array) -> mx.array:
        guidance = cond - uncond
        if self.momentum != 0:
            self.running_avg = guidance if self.running_avg is None else self.momentum * self.running_avg + guidance
            guidance = self.running_avg
        return _apg_direction(guidance, cond, self.eta, self.norm_threshold) * self.scale

    def enabled(self) -> bool:
        return self.scale != 0.0


@dataclass(frozen=True)
class MultiModalGuiderParams:
    """Guidance settings for one stream (video or audio)."""

    cfg_scale: float = 1.0
    "Classifier-free guidance: adherence to the prompt (1 = off)."
    stg_scale: float = 0.0
    "Spatio-temporal guidance: push away from the prediction with self-attention skipped in `stg_blocks` (0 = off)."
    stg_blocks: list[int] | None = field(default_factory=list)
    "Transformer blocks whose self-attention STG skips (None: all)."
    rescale_scale: float = 0.0
    "How much of the guided prediction's std is pulled back to the conditional one's (0 = off)."
    modality_scale: float = 1.0
    "Guidance away from the prediction without cross-modal (audio<->video) attention (1 = off)."
    skip_step: int = 0
    "Run the guided prediction only every skip_step + 1 steps, reusing the last one in between."


@dataclass(frozen=True)
class MultiModalGuider:
    """Combines CFG, STG and modality guidance for one stream with constant params."""

    params: MultiModalGuiderParams
    negative_context: mx.array | None = None

    def calculate(
        self,
        cond: mx.array,
        uncond_text: mx.array | float,
        uncond_perturbed: mx.array | float,
        uncond_modality: mx.array | float,
    ) -> mx.array:
        """cond + (cfg-1)(cond - uncond_text) + stg (cond - perturbed) + (modality-1)(cond -
        uncond_modality), then optionally rescaled towards cond's standard deviation. Terms whose
        prediction was not run are passed as 0.0 (their scale makes them vanish)."""
        params = self.params
        pred = (
            cond
            + (params.cfg_scale - 1) * (cond - uncond_text)
            + params.stg_scale * (cond - uncond_perturbed)
            + (params.modality_scale - 1) * (cond - uncond_modality)
        )
        if params.rescale_scale != 0:
            # Unbiased std over the whole tensor, like torch.Tensor.std().
            factor = mx.std(cond, ddof=1) / mx.std(pred, ddof=1)
            factor = params.rescale_scale * factor + (1 - params.rescale_scale)
            pred = pred * factor
        return pred

    def do_unconditional_generation(self) -> bool:
        return not math.isclose(self.params.cfg_scale, 1.0)

    def do_perturbed_generation(self) -> bool:
        return not math.isclose(self.params.stg_scale, 0.0)

    def do_isolated_modality_generation(self) -> bool:
        return not math.isclose(self.params.modality_scale, 1.0)

    def should_skip_step(self, step: int) -> bool:
        if self.params.skip_step == 0:
            return False
        return step % (self.params.skip_step + 1) != 0


def _params_for_sigma_from_sorted_dict(
    sigma: float, params_by_sigma: Sequence[tuple[float, MultiModalGuiderParams]]
) -> MultiModalGuiderParams:
    """Params of the bin (key_{i+1}, key_i] holding sigma, keys sorted descending; a sigma above
    every key takes the first bin."""
    if not params_by_sigma:
        raise ValueError("params_by_sigma must be non-empty")
    sigma = float(sigma)
    keys_desc = [k for k, _ in params_by_sigma]
    keys_ge_sigma = [k for k in keys_desc if k >= sigma]
    key = keys_ge_sigma[-1] if keys_ge_sigma else keys_desc[0]
    return next(p for k, p in params_by_sigma if k == key)


@dataclass(frozen=True)
class MultiModalGuiderFactory:
    """Gives the MultiModalGuider for a sigma: one params for all sigmas (`constant`) or
    params per sigma bin (`from_dict`, keys are the bins' upper bounds)."""

    negative_context: mx.array | None = None
    _params_by_sigma: tuple[tuple[float, MultiModalGuiderParams], ...] = ()

    @classmethod
    def constant(
        cls, params: MultiModalGuiderParams, negative_context: mx.array | None = None
    ) -> "MultiModalGuiderFactory":
        return cls(negative_context=negative_context, _params_by_sigma=((float("inf"), params),))

    @classmethod
    def from_dict(
        cls,
        sigma_to_params: Mapping[float, MultiModalGuiderParams],
        negative_context: mx.array | None = None,
    ) -> "MultiModalGuiderFactory":
        if not sigma_to_params:
            raise ValueError("sigma_to_params must be non-empty, e.g. {1.0: MultiModalGuiderParams(cfg_scale=3.0)}")
        sorted_items = tuple(sorted(sigma_to_params.items(), key=lambda item: item[0], reverse=True))
        return cls(negative_context=negative_context, _params_by_sigma=sorted_items)

    def params(self, sigma: float | mx.array) -> MultiModalGuiderParams:
        sigma_value = float(sigma.item() if isinstance(sigma, mx.array) else sigma)
        return _params_for_sigma_from_sorted_dict(sigma_value, self._params_by_sigma)

    def build_from_sigma(self, sigma: float | mx.array) -> MultiModalGuider:
        return MultiModalGuider(params=self.params(sigma), negative_context=self.negative_context)


def create_multimodal_guider_factory(
    params: MultiModalGuiderParams | MultiModalGuiderFactory,
    negative_context: mx.array | None = None,
) -> MultiModalGuiderFactory:
    """A factory from constant params, or the given factory (with `negative_context` swapped
    in when one is given)."""
    if isinstance(params, MultiModalGuiderFactory):
        if negative_context is not None and params.negative_context is not negative_context:
            return MultiModalGuiderFactory.from_dict(dict(params._params_by_sigma), negative_context=negative_context)
        return params
    return MultiModalGuiderFactory.constant(params, negative_context=negative_context)

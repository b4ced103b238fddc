"""In-context LoRA: generation steered by a reference video (depth, pose, edges...) whose
latent tokens sit beside the generated ones, with the IC-LoRA fused in the first stage only
(ltx-pipelines `ic_lora.py`). Distilled schedule, no guidance, two stages (or one, with
`skip_stage_2`: the half-size video is the output)."""

import math
from dataclasses import replace

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import DISTILLED_SIGMA_VALUES
from LTX_2_MLX.conditioning import ConditioningItemAttentionStrengthWrapper, VideoConditionByReferenceLatent
from LTX_2_MLX.loader.checkpoint import read_metadata
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    denoise_stage,
    half_and_full_shapes,
    image_conditionings,
    refine_upscaled,
)
from LTX_2_MLX.pipelines.media_io import load_video_conditioning
from LTX_2_MLX.pipelines.request import GenerationRequest


def reference_downscale_factor(lora_paths: list[str]) -> int:
    """How much smaller than the output the reference video is fed: IC-LoRAs trained on
    downscaled references say so in their metadata (`reference_downscale_factor`)."""
    factors = {int(read_metadata(path).get("reference_downscale_factor", 1)) for path in lora_paths} - {1}
    if len(factors) > 1:
        raise ValueError(f"the LoRAs disagree on reference_downscale_factor ({sorted(factors)}); use one IC-LoRA")
    return factors.pop() if factors else 1


def load_attention_mask(path: str, height: int, width: int, frame_cap: int) -> mx.array:
    """A mask video as (1, 1, F, height, width) in [0, 1]: its frames' channel mean, computed
    in bfloat16 as the reference does. torch rounds a bfloat16 mean once, from the exact mean;
    MLX's bfloat16 mean rounds the sum first, so the mean is taken in float32."""
    video = load_video_conditioning(path, height, width, frame_cap).astype(mx.bfloat16)
    mean = mx.mean(video.astype(mx.float32), axis=1, keepdims=True).astype(mx.bfloat16)
    return mx.clip((mean + 1.0) / 2.0, 0.0, 1.0)


def _area_resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Average over each output pixel's input area (torch's `interpolate(mode="area")`, i.e.
    adaptive average pooling) of (..., H, W) to (..., h, w)."""
    rows = [(i * frames.shape[-2] // size[0], math.ceil((i + 1) * frames.shape[-2] / size[0])) for i in range(size[0])]
    cols = [(j * frames.shape[-1] // size[1], math.ceil((j + 1) * frames.shape[-1] / size[1])) for j in range(size[1])]
    out = np.empty((*frames.shape[:-2], *size), np.float32)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[..., i, j] = frames[..., r0:r1, c0:c1].mean(axis=(-2, -1))
    return out


def mask_to_latent_tokens(
    mask: mx.array, latent_frames: int, latent_height: int, latent_width: int, strength: float = 1.0
) -> mx.array:
    """A pixel-space mask (1, 1, F, H, W) as one weight per latent token (1, f*h*w), in the
    patchifier's (f, h, w) order, times `strength`: area-averaged in space; in time the first
    frame alone (the causal VAE encodes it alone), then the mean of each group of the remaining
    frames. Each step's result is rounded to the mask's dtype, as the reference computes in it
    (torch multiplies a bfloat16 tensor by a Python float in float32, rounding once; MLX would
    round the strength to bfloat16 first)."""

    def rounded(values: np.ndarray) -> np.ndarray:
        return np.array(mx.array(values).astype(mask.dtype).astype(mx.float32))

    pixels = np.array(mask.astype(mx.float32))[0, 0]
    spatial = rounded(_area_resize(pixels, (latent_height, latent_width)))
    if pixels.shape[0] > 1 and latent_frames > 1:
        if (pixels.shape[0] - 1) % (latent_frames - 1):
            raise ValueError(
                f"the attention mask's {pixels.shape[0]} frames do not map onto the reference video's "
                f"{latent_frames} latent frames; give a mask with as many frames as the reference video"
            )
        group = (pixels.shape[0] - 1) // (latent_frames - 1)
        rest = rounded(spatial[1:].reshape(latent_frames - 1, group, latent_height, latent_width).mean(axis=1))
        spatial = np.concatenate([spatial[:1], rest])
    else:
        spatial = spatial[:1]
    return mx.array(spatial.reshape(1, -1) * np.float32(strength)).astype(mask.dtype)


class ICLoraPipeline(Pipeline):
    """The ledger's LoRAs are the IC-LoRA(s); the second stage runs without them."""

    name = "ic-lora"
    summary = "a distilled checkpoint steered by --video-conditioning through the IC-LoRA given with --lora"
    size_multiple, two_stage, guided, needs_spatial_upscaler = 64, True, False, True
    needs_lora, needs_video_conditioning = True, True

    @classmethod
    def check_own(cls, request: GenerationRequest) -> None:
        if not 0.0 <= request.conditioning_attention_strength <= 1.0:
            raise ValueError(
                f"conditioning_attention_strength={request.conditioning_attention_strength} must be in [0, 1]"
            )
        if request.conditioning_attention_mask is not None and not 0.0 <= request.conditioning_attention_mask[1] <= 1:
            raise ValueError(f"--conditioning-attention-mask strength {request.conditioning_attention_mask[1]} "
                             "must be in [0, 1]")  # fmt: skip

    def reference_conditionings(self, request: GenerationRequest, height: int, width: int, encoder) -> list:
        """Each reference video's latent tokens, their attention weighted by the mask (times
        its strength) or by the scalar strength."""
        scale = reference_downscale_factor([path for path, _ in self.ledger.loras])
        if height % scale or width % scale:
            raise ValueError(f"{height}x{width} must be divisible by the IC-LoRA's reference_downscale_factor {scale}")
        mask, strength = None, request.conditioning_attention_strength
        if request.conditioning_attention_mask is not None:
            mask_path, strength = request.conditioning_attention_mask
            mask = load_attention_mask(mask_path, height, width, request.num_frames)
        items = []
        for path, conditioning_strength in request.video_conditioning:
            video = load_video_conditioning(path, height // scale, width // scale, request.num_frames)
            latent = encoder(video.astype(self.ledger.dtype))
            item = VideoConditionByReferenceLatent(latent, scale, conditioning_strength)
            if mask is not None:
                weights = mask_to_latent_tokens(mask, *latent.shape[2:], strength=strength)
                item = ConditioningItemAttentionStrengthWrapper(item, attention_mask=weights)
            elif strength < 1.0:
                item = ConditioningItemAttentionStrengthWrapper(item, attention_mask=strength)
            items.append(item)
        return items

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger, audio = self.ledger, request.generate_audio
        half, full = half_and_full_shapes(request)
        contexts = self.encode_prompts(request).positive
        encoder = ledger.video_encoder()
        conditionings = image_conditionings(list(request.images), half.height, half.width, encoder, ledger.dtype)
        conditionings += self.reference_conditionings(request, half.height, half.width, encoder)
        del encoder
        transformer = ledger.transformer()
        stage_1 = denoise_stage(
            ledger, transformer, half, contexts, mx.array(DISTILLED_SIGMA_VALUES), noiser, conditionings,
            generate_audio=audio, on_step=self.stage_progress("stage 1"),
        )  # fmt: skip
        del transformer
        if request.skip_stage_2:
            return self.decode(request, stage_1[0].latent, stage_1[1].latent)
        stage_2_ledger = replace(ledger, loras=[])
        transformer = stage_2_ledger.transformer()
        video_state, audio_state = refine_upscaled(
            stage_2_ledger, transformer, stage_1, contexts, request.images, full, noiser, generate_audio=audio,
            on_step=self.stage_progress("stage 2"),
        )  # fmt: skip
        del transformer
        return self.decode(request, video_state.latent, audio_state.latent)

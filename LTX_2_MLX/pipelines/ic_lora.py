"""In-context LoRA: generation steered by a reference video (depth, pose, edges...) whose
latent tokens sit beside the generated ones, with the IC-LoRA fused in the first stage only
(ltx-pipelines `ic_lora.py`). Distilled schedule, no guidance, two stages."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.noisers import GaussianNoiser
from LTX_2_MLX.components.schedulers import DISTILLED_SIGMA_VALUES
from LTX_2_MLX.conditioning import ConditioningItemAttentionStrengthWrapper, VideoConditionByReferenceLatent
from LTX_2_MLX.loader.checkpoint import read_metadata
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    decode_outputs,
    denoise_stage,
    image_conditionings,
)
from LTX_2_MLX.pipelines.media_io import load_video_conditioning
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.two_stage import half_and_full_shapes, refine_upscaled


def reference_downscale_factor(lora_paths: list[str]) -> int:
    """How much smaller than the output the reference video is fed: IC-LoRAs trained on
    downscaled references say so in their metadata (`reference_downscale_factor`)."""
    factors = {int(read_metadata(path).get("reference_downscale_factor", 1)) for path in lora_paths} - {1}
    if len(factors) > 1:
        raise ValueError(f"the LoRAs disagree on reference_downscale_factor ({sorted(factors)}); use one IC-LoRA")
    return factors.pop() if factors else 1


class ICLoraPipeline:
    def __init__(self, ledger: ModelLedger, tiling: TilingConfig | None = None):
        """`ledger.loras` holds the IC-LoRA(s); the second stage runs without them."""
        self.ledger = ledger
        self.stage_2_ledger = replace(ledger, loras=[])
        self.tiling = tiling
        self.reference_downscale_factor = reference_downscale_factor([path for path, _ in ledger.loras])

    def reference_conditionings(
        self, videos: list[tuple[str, float]], height: int, width: int, num_frames: int, encoder,
        attention_strength: float,
    ) -> list:  # fmt: skip
        scale = self.reference_downscale_factor
        if height % scale or width % scale:
            raise ValueError(f"{height}x{width} must be divisible by the IC-LoRA's reference_downscale_factor {scale}")
        items = []
        for path, strength in videos:
            video = load_video_conditioning(path, height // scale, width // scale, num_frames)
            item = VideoConditionByReferenceLatent(encoder(video.astype(self.ledger.dtype)), scale, strength)
            if attention_strength < 1.0:
                item = ConditioningItemAttentionStrengthWrapper(item, attention_mask=attention_strength)
            items.append(item)
        return items

    def __call__(
        self, prompt: str, seed: int, height: int, width: int, num_frames: int, frame_rate: float,
        video_conditioning: list[tuple[str, float]], images: list[ImageConditioningInput] = (),
        enhance_prompt: bool = False, conditioning_attention_strength: float = 1.0, skip_stage_2: bool = False,
    ) -> GeneratedVideo:  # fmt: skip
        if not 0.0 <= conditioning_attention_strength <= 1.0:
            raise ValueError(f"conditioning_attention_strength={conditioning_attention_strength} must be in [0, 1]")
        ledger = self.ledger
        half, full = half_and_full_shapes(height, width, num_frames, frame_rate)
        ((video_context, audio_context, _),) = ledger.encode_prompts(
            [prompt], enhance_first_prompt=enhance_prompt, image=images[0].path if images else None, seed=seed
        )
        contexts, noiser = (video_context, audio_context), GaussianNoiser(seed)
        encoder = ledger.video_encoder()
        conditionings = image_conditionings(list(images), half.height, half.width, encoder, ledger.dtype)
        conditionings += self.reference_conditionings(
            video_conditioning, half.height, half.width, num_frames, encoder, conditioning_attention_strength
        )
        del encoder
        transformer = ledger.transformer()
        stage_1 = denoise_stage(ledger, transformer, half, contexts, mx.array(DISTILLED_SIGMA_VALUES), noiser, conditionings)
        del transformer
        if skip_stage_2:
            return decode_outputs(ledger, stage_1[0].latent, stage_1[1].latent, frame_rate, seed, self.tiling)
        transformer = self.stage_2_ledger.transformer()
        video_state, audio_state = refine_upscaled(self.stage_2_ledger, transformer, stage_1, contexts, images, full, noiser)
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)

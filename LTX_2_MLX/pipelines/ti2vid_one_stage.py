"""Text/image-to-video in one pass at the target size, with multi-modal guidance
(ltx-pipelines `ti2vid_one_stage.py`): encode prompts -> encode images -> denoise -> decode."""

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.diffusion_steps import EulerDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser
from LTX_2_MLX.components.schedulers import LTX2Scheduler
from LTX_2_MLX.components.types import VideoPixelShape
from LTX_2_MLX.model.video_vae import TilingConfig, decode_video
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    check_generation_size,
    image_conditionings,
)
from LTX_2_MLX.pipelines.denoising import PipelineComponents, denoise_audio_video
from LTX_2_MLX.pipelines.model_ledger import ModelLedger


class TI2VidOneStagePipeline:
    def __init__(self, ledger: ModelLedger, tiling: TilingConfig | None = None):
        self.ledger = ledger
        self.tiling = tiling

    def __call__(
        self,
        prompt: str,
        negative_prompt: str,
        seed: int,
        height: int,
        width: int,
        num_frames: int,
        frame_rate: float,
        num_inference_steps: int,
        video_guider_params: MultiModalGuiderParams,
        audio_guider_params: MultiModalGuiderParams,
        images: list[ImageConditioningInput] = (),
        enhance_prompt: bool = False,
    ) -> GeneratedVideo:
        check_generation_size(height, width, num_frames)
        ledger, dtype = self.ledger, self.ledger.dtype
        first_image = images[0].path if images else None
        (video_context, audio_context, _), (negative_video, negative_audio, _) = ledger.encode_prompts(
            [prompt, negative_prompt], enhance_first_prompt=enhance_prompt, image=first_image, seed=seed
        )

        conditionings = []
        if images:
            encoder = ledger.video_encoder()
            conditionings = image_conditionings(list(images), height, width, encoder, dtype)
            del encoder

        transformer = ledger.transformer()
        video_state, audio_state = denoise_audio_video(
            VideoPixelShape(batch=1, frames=num_frames, height=height, width=width, fps=frame_rate),
            transformer,
            video_context,
            audio_context,
            LTX2Scheduler().execute(steps=num_inference_steps),
            EulerDiffusionStep(),
            GaussianNoiser(seed),
            conditionings=conditionings,
            video_guider=create_multimodal_guider_factory(video_guider_params, negative_video),
            audio_guider=create_multimodal_guider_factory(audio_guider_params, negative_audio),
            components=PipelineComponents.for_transformer(
                transformer.velocity_model.config, audio_latent_channels=ledger.audio_latent_channels
            ),
            dtype=dtype,
        )
        mx.eval(video_state.latent, audio_state.latent)
        del transformer
        mx.clear_cache()
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)


def decode_outputs(
    ledger: ModelLedger, video_latent: mx.array, audio_latent: mx.array | None, fps: float, seed: int,
    tiling: TilingConfig | None,
) -> GeneratedVideo:  # fmt: skip
    """Audio is decoded first (small), then video frames are decoded lazily, chunk by chunk."""
    audio = None
    if audio_latent is not None and ledger.has_audio:
        from LTX_2_MLX.model.audio_vae import decode_audio

        decoder, vocoder = ledger.audio_decoder_and_vocoder()
        decoded = decode_audio(audio_latent, decoder, vocoder)
        audio = (np.array(decoded.waveform), decoded.sampling_rate)
        del decoder, vocoder
    frames = (np.array(chunk) for chunk in decode_video(video_latent, ledger.video_decoder(), tiling, mx.random.key(seed)))
    return GeneratedVideo(frames=frames, fps=fps, audio=audio)

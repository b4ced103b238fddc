"""Text/image-to-video in one pass at the target size, with multi-modal guidance
(ltx-pipelines `ti2vid_one_stage.py`): encode prompts -> encode images -> denoise -> decode."""

from LTX_2_MLX.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser, Noiser
from LTX_2_MLX.components.schedulers import LTX2Scheduler
from LTX_2_MLX.components.types import VideoPixelShape
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    check_generation_size,
    decode_outputs,
    denoise_stage,
    encode_images,
)
from LTX_2_MLX.pipelines.model_ledger import ModelLedger


class TI2VidOneStagePipeline:
    def __init__(self, ledger: ModelLedger, tiling: TilingConfig | None = None):
        self.ledger = ledger
        self.tiling = tiling

    def __call__(
        self, prompt: str, negative_prompt: str, seed: int, height: int, width: int, num_frames: int,
        frame_rate: float, num_inference_steps: int, video_guider_params: MultiModalGuiderParams,
        audio_guider_params: MultiModalGuiderParams, images: list[ImageConditioningInput] = (),
        enhance_prompt: bool = False, noiser: Noiser | None = None,
    ) -> GeneratedVideo:  # fmt: skip
        """`noiser` replaces the seed's Gaussian noise (e.g. InjectedNoiser for given noise)."""
        check_generation_size(height, width, num_frames)
        ledger = self.ledger
        shape = VideoPixelShape(batch=1, frames=num_frames, height=height, width=width, fps=frame_rate)
        (video_context, audio_context, _), (negative_video, negative_audio, _) = ledger.encode_prompts(
            [prompt, negative_prompt], enhance_first_prompt=enhance_prompt,
            image=images[0].path if images else None, seed=seed,
        )  # fmt: skip
        conditionings = encode_images(ledger, images, shape)
        guiders = (
            create_multimodal_guider_factory(video_guider_params, negative_video),
            create_multimodal_guider_factory(audio_guider_params, negative_audio),
        )
        transformer = ledger.transformer()
        video_state, audio_state = denoise_stage(
            ledger, transformer, shape, (video_context, audio_context),
            LTX2Scheduler().execute(steps=num_inference_steps), noiser or GaussianNoiser(seed), conditionings, guiders,
        )  # fmt: skip
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, frame_rate, seed, self.tiling)

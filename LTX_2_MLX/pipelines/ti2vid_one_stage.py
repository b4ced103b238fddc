"""Text/image-to-video in one pass at the target size, with multi-modal guidance
(ltx-pipelines `ti2vid_one_stage.py`): encode prompts -> encode images -> denoise -> decode."""

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import LTX2Scheduler
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import GeneratedVideo, denoise_stage, encode_images, output_shape
from LTX_2_MLX.pipelines.request import GenerationRequest


class TI2VidOneStagePipeline(Pipeline):
    name = "one-stage"
    summary = "guided (CFG + STG + modality guidance) at the target size"

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger = self.ledger
        shape = output_shape(request)
        prompts = self.encode_prompts(request)
        conditionings = encode_images(ledger, request.images, shape)
        transformer = ledger.transformer()
        video_state, audio_state = denoise_stage(
            ledger, transformer, shape, prompts.positive, LTX2Scheduler().execute(steps=request.num_inference_steps),
            noiser, conditionings, self.guiders(request, prompts), generate_audio=request.generate_audio,
            on_step=self.stage_progress("denoising"),
        )  # fmt: skip
        del transformer
        return self.decode(request, video_state.latent, audio_state.latent)

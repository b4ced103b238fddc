"""Audio-to-video in two stages (ltx-pipelines `a2vid_two_stage.py`): the given audio is encoded
by the audio VAE and held clean (never noised, never denoised) while the video is generated
to it: guided at half size, then upscaled x2 and refined with the distilled LoRA. The mp4
carries the given waveform itself, not the audio VAE's reconstruction of it."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import LTX2Scheduler
from LTX_2_MLX.components.types import AudioLatentShape
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    decode_outputs,
    denoise_stage,
    encode_images,
    half_and_full_shapes,
    refine_upscaled,
)
from LTX_2_MLX.pipelines.media_io import read_audio
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import GenerationRequest


def encode_audio_file(
    ledger: ModelLedger, waveform, sample_rate: int, num_frames: int, frame_rate: float
) -> mx.array:  # fmt: skip
    """The waveform's audio latent (B, channels, frames, mel_bins), cut to the video's length."""
    from LTX_2_MLX.model.audio_vae import Audio, encode_audio

    latent = encode_audio(Audio(mx.array(waveform)[None], sample_rate), ledger.audio_encoder())
    needed = AudioLatentShape.from_duration(batch=1, duration=num_frames / frame_rate).frames
    if latent.shape[2] < needed:
        raise ValueError(
            f"the audio lasts {waveform.shape[1] / sample_rate:.2f} s but the video {num_frames / frame_rate:.2f} s "
            f"({num_frames} frames at {frame_rate:g} fps): give longer audio or fewer frames"
        )
    latent = latent[:, :, :needed]
    mx.eval(latent)
    return latent


class A2VidPipelineTwoStage(Pipeline):
    """A full (dev) checkpoint: video guided at half size against the fixed audio latent, then
    the stage-2 refinement (distilled LoRA fused in), the audio still fixed. The request's
    `audio_max_duration` None reads as much audio as the video lasts (as ltx-pipelines' main);
    both stages draw video then audio noise from the noiser, the audio's scaled by 0."""

    name = "a2vid"
    summary = "video to the sound of --audio-path (held fixed): guided at half size, x2, distilled-LoRA refine"
    size_multiple, two_stage, needs_spatial_upscaler, needs_distilled_lora, needs_audio = 64, True, True, True, True
    enhance_prompt_seed = 42  # ltx-pipelines passes no seed to the enhancement here

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger = self.ledger
        half, full = half_and_full_shapes(request)
        prompts = self.encode_prompts(request)
        duration = request.audio_max_duration or request.num_frames / request.frame_rate  # as ltx-pipelines' main
        waveform, sample_rate = read_audio(request.audio_path, request.audio_start_time, duration)
        audio_latent = encode_audio_file(ledger, waveform, sample_rate, request.num_frames, request.frame_rate)
        frozen_audio = {"initial_audio_latent": audio_latent, "denoise_audio": False}

        conditionings = encode_images(ledger, request.images, half)
        guiders = (self.guiders(request, prompts)[0], None)  # the audio is given, not generated
        transformer = ledger.transformer()
        sigmas = LTX2Scheduler().execute(steps=request.num_inference_steps)
        stage_1 = denoise_stage(
            ledger, transformer, half, prompts.positive, sigmas, noiser, conditionings, guiders,
            on_step=self.stage_progress("stage 1"), **frozen_audio,
        )  # fmt: skip
        del transformer
        stage_2_ledger = replace(ledger, loras=[*ledger.loras, request.distilled_lora])
        transformer = stage_2_ledger.transformer()
        video_state, _ = refine_upscaled(
            stage_2_ledger, transformer, stage_1, prompts.positive, request.images, full, noiser,
            on_step=self.stage_progress("stage 2"), **frozen_audio,
        )  # fmt: skip
        del transformer
        result = decode_outputs(ledger, video_state.latent, None, request.frame_rate, request.seed, self.tiling)
        return replace(result, audio=(waveform, sample_rate))

"""Audio-to-video in two stages (ltx-pipelines `a2vid_two_stage.py`): the given audio is encoded
by the audio VAE and held clean (never noised, never denoised) while the video is generated
to it: guided at half size, then upscaled x2 and refined with the distilled LoRA. The mp4
carries the given waveform itself, not the audio VAE's reconstruction of it."""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.guiders import MultiModalGuiderParams, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser, Noiser
from LTX_2_MLX.components.schedulers import STAGE_2_DISTILLED_SIGMA_VALUES, LTX2Scheduler
from LTX_2_MLX.components.types import AudioLatentShape
from LTX_2_MLX.model.upscaler import upsample_latent
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import (
    GeneratedVideo,
    ImageConditioningInput,
    decode_outputs,
    denoise_stage,
    encode_images,
)
from LTX_2_MLX.pipelines.media_io import read_audio
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.two_stage import half_and_full_shapes


def encode_audio_file(
    ledger: ModelLedger, waveform, sample_rate: int, num_frames: int, frame_rate: float
) -> mx.array:  # fmt: skip
    """The waveform's audio latent (B, channels, frames, mel_bins), cut to the video's length."""
    from LTX_2_MLX.loader.audio_vae import load_audio_vae
    from LTX_2_MLX.model.audio_vae import Audio, encode_audio

    encoder = load_audio_vae(ledger.checkpoint_path, dtype=ledger.dtype, decoder=False).encoder
    latent = encode_audio(Audio(mx.array(waveform)[None], sample_rate), encoder)
    needed = AudioLatentShape.from_duration(batch=1, duration=num_frames / frame_rate).frames
    if latent.shape[2] < needed:
        raise ValueError(
            f"the audio lasts {waveform.shape[1] / sample_rate:.2f} s but the video {num_frames / frame_rate:.2f} s "
            f"({num_frames} frames at {frame_rate:g} fps): give longer audio or fewer frames"
        )
    latent = latent[:, :, :needed]
    mx.eval(latent)
    return latent


class A2VidPipelineTwoStage:
    """A full (dev) checkpoint: video guided at half size against the fixed audio latent, then
    the stage-2 refinement (distilled LoRA fused in), the audio still fixed."""

    def __init__(
        self, ledger: ModelLedger, distilled_lora: list[tuple[str, float]], tiling: TilingConfig | None = None
    ):
        self.ledger = ledger
        self.stage_2_ledger = replace(ledger, loras=[*ledger.loras, *distilled_lora])
        self.tiling = tiling

    def __call__(
        self, prompt: str, negative_prompt: str, seed: int, height: int, width: int, num_frames: int,
        frame_rate: float, num_inference_steps: int, video_guider_params: MultiModalGuiderParams, audio_path: str,
        audio_start_time: float = 0.0, audio_max_duration: float | None = None,
        images: list[ImageConditioningInput] = (), enhance_prompt: bool = False, noiser: Noiser | None = None,
    ) -> GeneratedVideo:  # fmt: skip
        """`audio_max_duration` None reads the audio to its end (the CLI passes the video's
        duration, as ltx-pipelines' main does). `noiser` replaces the seed's noise; both stages
        draw video then audio noise from it, the audio's scaled by 0."""
        ledger = self.ledger
        half, full = half_and_full_shapes(height, width, num_frames, frame_rate)
        (video_context, audio_context, _), (negative_video, _, _) = ledger.encode_prompts(
            [prompt, negative_prompt], enhance_first_prompt=enhance_prompt,
            image=images[0].path if images else None, seed=seed,
        )  # fmt: skip
        waveform, sample_rate = read_audio(audio_path, audio_start_time, audio_max_duration)
        audio_latent = encode_audio_file(ledger, waveform, sample_rate, num_frames, frame_rate)
        contexts, noiser = (video_context, audio_context), noiser or GaussianNoiser(seed)
        frozen_audio = {"initial_audio_latent": audio_latent, "denoise_audio": False}

        conditionings = encode_images(ledger, images, half)
        guiders = (create_multimodal_guider_factory(video_guider_params, negative_video), None)
        transformer = ledger.transformer()
        sigmas = LTX2Scheduler().execute(steps=num_inference_steps)
        video_state, _ = denoise_stage(ledger, transformer, half, contexts, sigmas, noiser, conditionings, guiders,
                                       **frozen_audio)  # fmt: skip
        del transformer

        statistics = ledger.video_encoder().per_channel_statistics
        upscaled = upsample_latent(video_state.latent[:1], ledger.spatial_upscaler(), statistics)
        transformer = self.stage_2_ledger.transformer()
        sigmas = mx.array(STAGE_2_DISTILLED_SIGMA_VALUES)
        video_state, _ = denoise_stage(
            self.stage_2_ledger, transformer, full, contexts, sigmas, noiser, encode_images(ledger, images, full),
            noise_scale=sigmas[0], initial_video_latent=upscaled, **frozen_audio,
        )  # fmt: skip
        del transformer
        result = decode_outputs(ledger, video_state.latent, None, frame_rate, seed, self.tiling)
        return replace(result, audio=(waveform, sample_rate))

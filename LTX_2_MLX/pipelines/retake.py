"""Retake: regenerate a time range of an existing clip, keeping the rest (ltx-pipelines
`retake.py`): read the clip -> encode its video and audio -> mask the time range -> denoise
from the clip's latents -> decode.

The output has the clip's size, frame count and frame rate, so the clip must already be a
size the VAE takes (multiples of 32, 8k+1 frames), as the reference's CLI requires; outside
[start_time, end_time) the latents are the clip's own. A clip without audio gets new audio
over its whole length, as in the reference.
"""

from dataclasses import dataclass, replace

import imageio_ffmpeg
import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import DISTILLED_SIGMA_VALUES, LTX2Scheduler
from LTX_2_MLX.components.types import AudioLatentShape, VideoPixelShape
from LTX_2_MLX.conditioning import TemporalRegionMask
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.common import GeneratedVideo, decode_outputs, denoise_stage
from LTX_2_MLX.pipelines.media_io import (
    check_video_file,
    has_audio_stream,
    read_audio,
    read_video_file,
)
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import GenerationRequest


@dataclass(frozen=True)
class SourceClip:
    """What retake needs to know about the clip before any model loads."""

    path: str
    num_frames: int
    height: int
    width: int
    fps: float

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def shape(self) -> VideoPixelShape:
        return VideoPixelShape(batch=1, frames=self.num_frames, height=self.height, width=self.width, fps=self.fps)


def probe_clip(path: str) -> SourceClip:
    """The clip's frame count, size and rate, refusing a clip the VAE cannot take whole."""
    check_video_file(path)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    reader.close()
    num_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    (width, height), fps = meta["size"], float(meta["fps"])
    if num_frames < 1 or not fps > 0:
        raise ValueError(f"{path}: the video has no frames (or no frame rate); give a clip with video.")
    if (num_frames - 1) % 8:
        cut = (num_frames - 1) // 8 * 8 + 1
        raise ValueError(
            f"{path} has {num_frames} frames; retake keeps the clip's length, which must be 8k+1 frames: "
            f"cut it to {cut} (ffmpeg -i IN -frames:v {cut} OUT.mp4)"
        )
    if width % 32 or height % 32:
        fit_w, fit_h = max(32, width // 32 * 32), max(32, height // 32 * 32)
        raise ValueError(
            f"{path} is {width}x{height}; retake keeps the clip's size, whose sides must be multiples of 32: "
            f"crop it, e.g. to {fit_w}x{fit_h} (ffmpeg -i IN -vf crop={fit_w}:{fit_h} OUT.mp4)"
        )
    return SourceClip(str(path), num_frames, height, width, fps)


def check_time_range(clip: SourceClip, start_time: float, end_time: float) -> None:
    if not 0.0 <= start_time < end_time <= clip.duration:
        raise ValueError(
            f"--start-time {start_time} --end-time {end_time}: the range to regenerate must satisfy "
            f"0 <= start < end <= {clip.duration:g} s (the length of {clip.path})"
        )


def encode_clip_video(ledger: ModelLedger, clip: SourceClip) -> mx.array:
    """All of the clip's frames through the video VAE encoder."""
    frames, _ = read_video_file(clip.path)
    pixels = mx.array(frames.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2)[None]
    latent = ledger.video_encoder()(pixels.astype(ledger.dtype))
    mx.eval(latent)
    return latent


def load_audio_encoder(ledger: ModelLedger):
    return ledger.audio_encoder()


def encode_clip_audio(
    ledger: ModelLedger, clip: SourceClip, padded_to: VideoPixelShape | None = None
) -> mx.array | None:
    """The clip's audio through the audio VAE encoder, cut to the clip's video length in audio
    latent frames and zero-padded to it (or to `padded_to`'s length); None when the clip has no
    audio."""
    from LTX_2_MLX.model.audio_vae import encode_audio
    from LTX_2_MLX.model.audio_vae.ops import Audio

    if not (ledger.has_audio and has_audio_stream(clip.path)):
        return None
    waveform, sample_rate = read_audio(clip.path)
    latent = encode_audio(Audio(mx.array(waveform)[None].astype(ledger.dtype), sample_rate), load_audio_encoder(ledger))
    latent = latent[:, :, : AudioLatentShape.from_video_pixel_shape(clip.shape).frames]
    frames = AudioLatentShape.from_video_pixel_shape(padded_to or clip.shape).frames
    if latent.shape[2] < frames:
        padding = mx.zeros((*latent.shape[:2], frames - latent.shape[2], latent.shape[3]), latent.dtype)
        latent = mx.concatenate([latent, padding], axis=2)
    mx.eval(latent)
    return latent


class RetakePipeline(Pipeline):
    """Guided with the LTX-2 schedule (a dev checkpoint). The request's `regenerate_video` /
    `regenerate_audio` False keeps that stream as the clip has it."""

    name = "retake"
    summary = "regenerate --start-time..--end-time of the clip --video-path, guided, keeping the rest"
    needs_source_video = True
    source_video_options = "--start-time S --end-time S"

    @classmethod
    def with_source_video(cls, request: GenerationRequest) -> GenerationRequest:
        """At the clip's size, frame count and rate, once the clip and the time range are
        checked (decoding it, no model)."""
        if request.source_video is None:
            return request
        if request.start_time is None or request.end_time is None:
            raise ValueError(f"--pipeline {cls.name} regenerates a time range: add --start-time S --end-time S")
        clip = probe_clip(request.source_video)
        check_time_range(clip, request.start_time, request.end_time)
        return replace(request, height=clip.height, width=clip.width, num_frames=clip.num_frames, frame_rate=clip.fps)

    def schedule(self, request: GenerationRequest) -> mx.array:
        return LTX2Scheduler().execute(steps=request.num_inference_steps)

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger = self.ledger
        clip = probe_clip(request.source_video)
        video_latent, audio_latent = encode_clip_video(ledger, clip), encode_clip_audio(ledger, clip)

        def region(regenerate: bool) -> list[TemporalRegionMask]:
            # An empty range keeps the whole stream.
            start, end = (request.start_time, request.end_time) if regenerate else (0, 0)
            return [TemporalRegionMask(start, end, clip.fps)]

        return self.denoise_from_clip(
            request, noiser, clip.shape, (video_latent, audio_latent),
            (region(request.regenerate_video), region(request.regenerate_audio)),
        )  # fmt: skip

    def denoise_from_clip(
        self, request: GenerationRequest, noiser: Noiser, shape: VideoPixelShape,
        latents: tuple[mx.array, mx.array | None], regions: tuple[list, list],
    ) -> GeneratedVideo:  # fmt: skip
        """Denoise from the clip's (video, audio) latents where the (video, audio) region masks
        say, keep the rest, and decode; a clip without audio gets new audio throughout."""
        ledger, (video_latent, audio_latent) = self.ledger, latents
        prompts = self.encode_prompts(request)
        transformer = ledger.transformer()
        video_state, audio_state = denoise_stage(
            ledger, transformer, shape, prompts.positive, self.schedule(request), noiser, regions[0],
            self.guiders(request, prompts), initial_video_latent=video_latent, initial_audio_latent=audio_latent,
            audio_conditionings=regions[1] if audio_latent is not None else [],
            on_step=self.stage_progress("denoising"),
        )  # fmt: skip
        del transformer
        return decode_outputs(ledger, video_state.latent, audio_state.latent, shape.fps, request.seed, self.tiling)


class RetakeDistilledPipeline(RetakePipeline):
    """Retake with a distilled checkpoint: the 8 fixed distilled sigmas, unguided."""

    name = "retake-distilled"
    summary = "retake with a distilled checkpoint: 8 unguided steps"
    guided = False

    def schedule(self, request: GenerationRequest) -> mx.array:
        return mx.array(DISTILLED_SIGMA_VALUES)

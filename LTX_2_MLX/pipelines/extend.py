"""Extend: continue an existing clip by N frames (not in ltx-pipelines; built from the retake
machinery). The clip's video and audio latents are placed at the start of a longer canvas,
held clean (denoise mask 0), and only the time after the clip's end is generated, so the new
frames follow on from the clip's last ones and its audio carries on.

Only forwards: the causal VAE encodes a clip's first frame alone, so the clip's latents can
start a canvas but cannot sit after new frames unchanged.
"""

from dataclasses import replace

import mlx.core as mx

from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.conditioning import TemporalRegionMask
from LTX_2_MLX.pipelines.common import GeneratedVideo
from LTX_2_MLX.pipelines.request import GenerationRequest
from LTX_2_MLX.pipelines.retake import RetakePipeline, encode_clip_audio, encode_clip_video, probe_clip


class ExtendPipeline(RetakePipeline):
    """Guided with the LTX-2 schedule (a dev checkpoint), as retake."""

    name = "extend"
    summary = "add --extend-frames N (a multiple of 8) frames after the clip --video-path, audio continued"
    extends_clip = True
    source_video_options = "--extend-frames N"

    @classmethod
    def with_source_video(cls, request: GenerationRequest) -> GenerationRequest:
        """At the clip's size and rate, its frame count plus the new frames."""
        if request.source_video is None:
            return request
        if request.extend_frames <= 0 or request.extend_frames % 8:
            suggestion = max(8, round(request.extend_frames / 8) * 8)
            raise ValueError(
                f"--extend-frames {request.extend_frames}: add a positive multiple of 8 frames (one latent frame "
                f"is 8 frames), e.g. {suggestion}"
            )
        clip = probe_clip(request.source_video)
        return replace(request, height=clip.height, width=clip.width, frame_rate=clip.fps,
                       num_frames=clip.num_frames + request.extend_frames)  # fmt: skip

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        ledger = self.ledger
        clip = probe_clip(request.source_video)
        shape = clip.shape._replace(frames=clip.num_frames + request.extend_frames)
        clip_latent = encode_clip_video(ledger, clip)
        batch, channels, _, height, width = clip_latent.shape
        new_latent = mx.zeros((batch, channels, request.extend_frames // 8, height, width), clip_latent.dtype)
        video_latent = mx.concatenate([clip_latent, new_latent], axis=2)
        audio_latent = encode_clip_audio(ledger, clip, padded_to=shape)
        # Everything from the clip's end on is generated; the end lies past the canvas.
        after_clip = [TemporalRegionMask(clip.duration, 2 * shape.frames / clip.fps, clip.fps)]
        return self.denoise_from_clip(request, noiser, shape, (video_latent, audio_latent), (after_clip, after_clip))

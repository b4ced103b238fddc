"""What the pipelines' recipes share besides the denoising loop: size checks, image
conditionings, one denoising stage, the latent x2 upscale and refinement, and decoding."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from LTX_2_MLX.components.diffusion_steps import DiffusionStepProtocol, EulerDiffusionStep
from LTX_2_MLX.components.guiders import MultiModalGuiderFactory
from LTX_2_MLX.components.noisers import Noiser
from LTX_2_MLX.components.schedulers import STAGE_2_DISTILLED_SIGMA_VALUES
from LTX_2_MLX.components.types import LatentState, VideoPixelShape
from LTX_2_MLX.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
from LTX_2_MLX.model.transformer.modality import Modality
from LTX_2_MLX.model.upscaler import upsample_latent
from LTX_2_MLX.model.video_vae import TilingConfig, decode_video
from LTX_2_MLX.pipelines.denoising import PipelineComponents, X0Transformer, denoise_audio_video
from LTX_2_MLX.pipelines.media_io import load_image_conditioning
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import GenerationRequest, ImageConditioningInput

DEFAULT_NEGATIVE_PROMPT = json.loads((Path(__file__).parent / "default_negative_prompt.json").read_text())[
    "negative_prompt"
]


def check_generation_size(height: int, width: int, num_frames: int, divisor: int = 32) -> None:
    """The VAE compresses 32x in space and 8x in time (after a first frame of its own)."""
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise ValueError(
            f"height={height}, width={width}: both must be positive multiples of {divisor}, "
            f"e.g. {max(divisor, round(height / divisor) * divisor)}x{max(divisor, round(width / divisor) * divisor)}"
        )
    if num_frames < 1 or (num_frames - 1) % 8:
        suggestion = max(1, round((num_frames - 1) / 8)) * 8 + 1
        raise ValueError(f"num_frames={num_frames} must be 8k+1, e.g. {suggestion}")


def output_shape(request: GenerationRequest) -> VideoPixelShape:
    return VideoPixelShape(
        batch=1, frames=request.num_frames, height=request.height, width=request.width, fps=request.frame_rate
    )


def half_and_full_shapes(request: GenerationRequest) -> tuple[VideoPixelShape, VideoPixelShape]:
    """A two-stage pipeline's first-stage (half-size) and output shapes."""
    full = output_shape(request)
    return full._replace(height=full.height // 2, width=full.width // 2), full


def image_conditionings(
    images: list[ImageConditioningInput], height: int, width: int, video_encoder, dtype: mx.Dtype,
    all_as_keyframes: bool = False,
) -> list:  # fmt: skip
    """Encode each image and place it: frame 0 replaces the first latent, others become
    keyframe tokens; with all_as_keyframes every image guides as a keyframe (interpolation)."""
    conditionings = []
    for image in images:
        encoded = video_encoder(load_image_conditioning(image.path, height, width, image.crf).astype(dtype))
        if image.frame_idx == 0 and not all_as_keyframes:
            conditionings.append(VideoConditionByLatentIndex(latent=encoded, strength=image.strength, latent_idx=0))
        else:
            conditionings.append(
                VideoConditionByKeyframeIndex(keyframes=encoded, frame_idx=image.frame_idx, strength=image.strength)
            )
        mx.eval(encoded)
    return conditionings


@dataclass
class GeneratedVideo:
    """Decoded frames as (F, H, W, 3) uint8 chunks (yielded as they are decoded), and the
    waveform (channels, samples) with its sample rate when the model makes audio."""

    frames: Iterator[np.ndarray]
    fps: float
    audio: tuple[np.ndarray, int] | None
    chunks: int = 1

    def all_frames(self) -> np.ndarray:
        """Every frame as one (F, H, W, 3) uint8 array (decoding what is not decoded yet)."""
        return np.concatenate(list(self.frames))

    def save(self, path: str | Path) -> Path:
        """Write the mp4 (H.264, AAC audio when there is audio), decoding frames as they are written."""
        from LTX_2_MLX.pipelines.media_io import write_video

        return write_video(path, self.frames, self.fps, self.audio)


def encode_images(
    ledger: ModelLedger, images: list[ImageConditioningInput], shape: VideoPixelShape, all_as_keyframes: bool = False
) -> list:
    """The images' conditioning items at `shape`'s size; the VAE encoder is loaded only when
    there are images, and dropped after."""
    if not images:
        return []
    return image_conditionings(list(images), shape.height, shape.width, ledger.video_encoder(), ledger.dtype,
                               all_as_keyframes)  # fmt: skip


def pipeline_components(ledger: ModelLedger, transformer) -> PipelineComponents:
    return PipelineComponents.for_transformer(
        transformer.velocity_model.config, audio_latent_channels=ledger.audio_latent_channels
    )


class VideoOnlyTransformer:
    """The DiT run on the video stream alone (no audio tokens, no audio<->video attention); the
    audio latent passes through unchanged, so a silent video costs only the video stream."""

    def __init__(self, transformer: X0Transformer):
        self.transformer = transformer
        self.velocity_model = transformer.velocity_model

    def __call__(self, video: Modality, audio: Modality, perturbations=None) -> tuple[mx.array, mx.array]:
        denoised_video, _ = self.transformer(video, None, perturbations)
        return denoised_video, audio.latent

    def forward_passes(self, passes: list[tuple]) -> list[tuple[mx.array, mx.array]]:
        inner = getattr(self.transformer, "forward_passes", None)
        if inner is None:
            return [self(*one) for one in passes]
        videos = inner([(video, None, perturbations) for video, _, perturbations in passes])
        return [(denoised, audio.latent) for (denoised, _), (_, audio, _) in zip(videos, passes)]


def denoise_stage(
    ledger: ModelLedger, transformer: X0Transformer, shape: VideoPixelShape, contexts: tuple[mx.array, mx.array],
    sigmas: mx.array, noiser: Noiser, conditionings: list = (),
    guiders: tuple[MultiModalGuiderFactory | None, ...] = (None, None), *, generate_audio: bool = True,
    stepper: DiffusionStepProtocol | None = None, **options,
) -> tuple[LatentState, LatentState]:  # fmt: skip
    """One pass of the shared loop (Euler unless `stepper` says otherwise), evaluated.
    `options` go to `denoise_audio_video`: noise_scale and the initial latents when refining
    instead of starting from noise, denoise_audio, on_step, res_2s noise sources.
    generate_audio=False runs the video stream alone and leaves the audio latent empty."""
    if not generate_audio:
        transformer = VideoOnlyTransformer(transformer)
        options.update(denoise_audio=False, initial_audio_latent=None, audio_conditionings=())
    states = denoise_audio_video(
        shape, transformer, *contexts, sigmas, stepper or EulerDiffusionStep(), noiser, conditionings=conditionings,
        video_guider=guiders[0], audio_guider=guiders[1], components=pipeline_components(ledger, transformer),
        dtype=ledger.dtype, **options,
    )  # fmt: skip
    mx.eval(states[0].latent, states[1].latent)
    return states


def upscale_video_latent(ledger: ModelLedger, video_latent: mx.array) -> mx.array:
    """The latent x2 in space through the spatial upscaler (in the VAE's un-normalised space)."""
    upscaled = upsample_latent(video_latent[:1], ledger.spatial_upscaler(), ledger.latent_statistics())
    mx.eval(upscaled)
    return upscaled


def refine_upscaled(
    ledger: ModelLedger, transformer: X0Transformer, stage_1: tuple[LatentState, LatentState],
    contexts: tuple[mx.array, mx.array], images, shape: VideoPixelShape, noiser: Noiser,
    all_as_keyframes: bool = False, **options,
) -> tuple[LatentState, LatentState]:  # fmt: skip
    """Stage 2: upscale the half-size video latent x2, re-noise it to the first stage-2 sigma
    and denoise it (with the stage-1 audio) at full size on the distilled stage-2 schedule,
    unguided. `options` as `denoise_stage`'s (a fixed audio latent, the res_2s stepper...)."""
    video_state, audio_state = stage_1
    upscaled = upscale_video_latent(ledger, video_state.latent)
    sigmas = mx.array(STAGE_2_DISTILLED_SIGMA_VALUES)
    options.setdefault("initial_audio_latent", audio_state.latent)
    return denoise_stage(
        ledger, transformer, shape, contexts, sigmas, noiser, encode_images(ledger, images, shape, all_as_keyframes),
        noise_scale=sigmas[0], initial_video_latent=upscaled, **options,
    )  # fmt: skip


def decode_outputs(
    ledger: ModelLedger, video_latent: mx.array, audio_latent: mx.array | None, fps: float, seed: int,
    tiling: TilingConfig | None,
) -> GeneratedVideo:  # fmt: skip
    """Audio is decoded first (small), then video frames are decoded lazily, chunk by chunk. In a
    parallel run (`ledger.parallel`) every process must iterate the frames: each decodes its
    share of the tiles (distributed/decode.py)."""
    # Handing the DiT's buffers back (20 GB) took 0.4 s on an H200. MLX frees cached buffers
    # itself before an allocation would pass its memory limit, so they go here only when they
    # are a large share of that limit: where the decoders will need the room.
    if mx.get_cache_memory() > mx.get_memory_limit() // 4:
        mx.clear_cache()
    audio = None
    if audio_latent is not None and ledger.has_audio:
        from LTX_2_MLX.model.audio_vae import decode_audio

        decoder, vocoder = ledger.audio_decoder_and_vocoder()
        decoded = decode_audio(audio_latent, decoder, vocoder)
        audio = (np.array(decoded.waveform), decoded.sampling_rate)
        del decoder, vocoder
    if ledger.parallel is None:
        chunks = decode_video(video_latent, ledger.video_decoder(), tiling, mx.random.key(seed))
    else:
        from LTX_2_MLX.distributed import decode_video_shared, parallel_group

        group = parallel_group(ledger.parallel)
        chunks = decode_video_shared(group, video_latent, ledger.video_decoder(), tiling, mx.random.key(seed))
    frames = (np.array(chunk) for chunk in chunks)
    return GeneratedVideo(frames=frames, fps=fps, audio=audio)

"""What every pipeline shares: one call signature, its requirements (checked before any model
loads), and the first steps of every recipe (prompts, guiders, decoding).

    pipeline = DistilledPipeline(ModelLedger(checkpoint, gemma, spatial_upscaler_path=upscaler))
    video = pipeline(prompt="A red fox runs through fresh snow", num_frames=49)

A pipeline is called with a `GenerationRequest`, or with its fields as keywords (missing ones
take the pipeline's defaults for the checkpoint's version), and returns a `GeneratedVideo`.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import mlx.core as mx

from LTX_2_MLX.components.guiders import MultiModalGuiderFactory, create_multimodal_guider_factory
from LTX_2_MLX.components.noisers import GaussianNoiser, Noiser
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import GeneratedVideo, check_generation_size, decode_outputs
from LTX_2_MLX.pipelines.denoising import StepCallback
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import GenerationRequest, PipelineParams, detect_params

# Told (stage, steps done, steps in the stage) after each denoising step.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PromptContexts:
    """The encoded prompt per stream, and the negative prompt's when the pipeline is guided."""

    video: mx.array
    audio: mx.array
    negative_video: mx.array | None = None
    negative_audio: mx.array | None = None

    @property
    def positive(self) -> tuple[mx.array, mx.array]:
        return self.video, self.audio


class Pipeline:
    """A recipe over the shared denoising core. Subclasses set their name, requirements and
    defaults, and implement `generate`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    size_multiple: ClassVar[int] = 32
    two_stage: ClassVar[bool] = False  # output at twice the size of the first stage
    guided: ClassVar[bool] = True  # runs the negative prompt and guidance (a dev checkpoint)
    needs_spatial_upscaler: ClassVar[bool] = False
    needs_distilled_lora: ClassVar[bool] = False
    needs_lora: ClassVar[bool] = False
    needs_video_conditioning: ClassVar[bool] = False
    min_images: ClassVar[int] = 0
    needs_audio: ClassVar[bool] = False  # generates video to the given audio_path
    needs_source_video: ClassVar[bool] = False  # changes a given clip: size, frames and rate are the clip's
    extends_clip: ClassVar[bool] = False  # adds frames after the clip instead of regenerating a range
    source_video_options: ClassVar[str] = ""  # what else changing the clip takes, for the error message
    defaults: ClassVar[PipelineParams | None] = None  # None: the checkpoint version's
    # The seed Gemma samples the enhanced prompt with: the generation's, or a fixed one where the
    # reference passes none (its default, 42).
    enhance_prompt_seed: ClassVar[int | None] = None

    def __init__(self, ledger: ModelLedger, tiling: TilingConfig | None = None):
        self.ledger = ledger
        self.tiling = tiling
        self.progress: ProgressCallback | None = None

    # ----------------------------------------------------------------------------------------
    # The one signature
    # ----------------------------------------------------------------------------------------

    def __call__(
        self, request: GenerationRequest | None = None, /, *, noiser: Noiser | None = None,
        progress: ProgressCallback | None = None, **request_fields,
    ) -> GeneratedVideo:  # fmt: skip
        """Generate from `request` (fields given as keywords override it), checked first.
        `noiser` replaces the seed's Gaussian noise (e.g. `InjectedNoiser` for given noise);
        `progress(stage, done, total)` is told after each denoising step."""
        if request is None:
            request = self.request(**request_fields)
        elif request_fields:
            request = replace(request, **request_fields)
        request = self.with_source_video(request)
        self.check(request, self.ledger.spatial_upscaler_path is not None, len(self.ledger.loras))
        self.progress = progress
        return self.generate(request, noiser or GaussianNoiser(request.seed))

    def generate(self, request: GenerationRequest, noiser: Noiser) -> GeneratedVideo:
        raise NotImplementedError(f"{type(self).__name__} does not implement generate()")

    @classmethod
    def params(cls, checkpoint_path) -> PipelineParams:
        return cls.defaults or detect_params(checkpoint_path)

    def request(self, **request_fields) -> GenerationRequest:
        """A request with the pipeline's defaults for this checkpoint where a field is not given."""
        known = {f.name for f in fields(GenerationRequest)}
        unknown = sorted(set(request_fields) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown request fields {unknown}; see GenerationRequest")
        params = self.params(self.ledger.checkpoint_path)
        height, width = params.size(self.two_stage)
        defaults = dict(
            seed=params.seed, height=height, width=width, num_frames=params.num_frames,
            frame_rate=params.frame_rate, num_inference_steps=params.num_inference_steps,
            video_guider_params=params.video_guider_params, audio_guider_params=params.audio_guider_params,
        )  # fmt: skip
        if self.guided and "negative_prompt" not in request_fields:
            from LTX_2_MLX.pipelines.common import DEFAULT_NEGATIVE_PROMPT

            defaults["negative_prompt"] = DEFAULT_NEGATIVE_PROMPT
        return GenerationRequest(**{**defaults, **request_fields})

    # ----------------------------------------------------------------------------------------
    # Requirements, checked without a model
    # ----------------------------------------------------------------------------------------

    @classmethod
    def with_source_video(cls, request: GenerationRequest) -> GenerationRequest:
        """Pipelines that change a clip take its size, frames and rate here; others unchanged."""
        return request

    @classmethod
    def check(cls, request: GenerationRequest, spatial_upscaler: bool, loras: int) -> None:
        """Refuse a request this pipeline cannot run, naming the option that fixes it."""
        check_generation_size(request.height, request.width, request.num_frames, divisor=cls.size_multiple)
        name = f"--pipeline {cls.name}"
        if cls.needs_spatial_upscaler and not spatial_upscaler:
            raise ValueError(f"{name} needs the latent x2 upscaler: add --spatial-upscaler-path FILE")
        if cls.needs_distilled_lora and request.distilled_lora is None:
            raise ValueError(f"{name} needs the distilled LoRA for its second stage: add --distilled-lora FILE 0.6")
        if cls.needs_lora and not loras:
            raise ValueError(f"{name} needs the IC-LoRA: add --lora FILE 1.0")
        if cls.needs_video_conditioning and not request.video_conditioning:
            raise ValueError(f"{name} needs a reference video: add --video-conditioning FILE 1.0")
        if cls.needs_source_video and request.source_video is None:
            raise ValueError(f"{name} changes an existing clip: add --video-path FILE {cls.source_video_options}")
        if cls.needs_source_video and not (request.regenerate_video or request.regenerate_audio):
            raise ValueError(f"{name} with --keep-video and --keep-audio regenerates nothing; drop one of them")
        if cls.needs_audio and request.audio_path is None:
            raise ValueError(f"{name} generates video to given audio: add --audio-path FILE")
        if len(request.images) < cls.min_images:
            raise ValueError(f"{name} needs at least {cls.min_images} images: add --image FILE FRAME STRENGTH for each")
        for option, given, used in cls._options_used(request):
            if given and not used:
                raise ValueError(f"{name} does not use {option}; drop it or choose a pipeline that does")
        for image in request.images:
            if not 0 <= image.frame_idx < request.num_frames:
                raise ValueError(
                    f"--image {image.path} {image.frame_idx}: the frame must be in [0, {request.num_frames - 1}]"
                )
            if not 0.0 <= image.strength <= 1.0:
                raise ValueError(f"--image {image.path}: strength {image.strength} must be in [0, 1]")
            if not 0 <= image.crf <= 51:
                raise ValueError(f"--image {image.path}: CRF {image.crf} must be in [0, 51] (0: no re-encoding)")
        cls.check_own(request)

    @classmethod
    def check_own(cls, request: GenerationRequest) -> None:
        """A pipeline's further rules."""

    @classmethod
    def _options_used(cls, request: GenerationRequest) -> list[tuple[str, bool, bool]]:
        """(option, given, used by this pipeline) for every option that only some pipelines use."""
        retakes = cls.needs_source_video and not cls.extends_clip
        return [
            ("--distilled-lora", request.distilled_lora is not None, cls.needs_distilled_lora),
            ("--video-conditioning", bool(request.video_conditioning), cls.needs_video_conditioning),
            ("--conditioning-attention-strength", request.conditioning_attention_strength != 1.0,
             cls.needs_video_conditioning),
            ("--conditioning-attention-mask", request.conditioning_attention_mask is not None,
             cls.needs_video_conditioning),
            ("--skip-stage-2", request.skip_stage_2, cls.needs_video_conditioning),
            ("--audio-path", request.audio_path is not None, cls.needs_audio),
            ("--audio-start-time/--audio-max-duration",
             request.audio_start_time != 0.0 or request.audio_max_duration is not None, cls.needs_audio),
            ("--no-audio", not request.generate_audio, not (cls.needs_audio or cls.needs_source_video)),
            ("--video-path", request.source_video is not None, cls.needs_source_video),
            ("--start-time/--end-time", (request.start_time, request.end_time) != (None, None), retakes),
            ("--keep-video/--keep-audio", not (request.regenerate_video and request.regenerate_audio), retakes),
            ("--extend-frames", request.extend_frames != 0, cls.extends_clip),
            ("--image", bool(request.images), not cls.needs_source_video),
        ]  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # Recipe steps
    # ----------------------------------------------------------------------------------------

    def encode_prompts(self, request: GenerationRequest) -> PromptContexts:
        """The prompt (and, when guided, the negative prompt) through Gemma, or their stored
        embeddings; `enhance_prompt` rewrites the prompt first, seeing the first image."""
        prompts = [request.prompt, request.negative_prompt] if self.guided else [request.prompt]
        encoded = self.ledger.encode_prompts(
            prompts, enhance_first_prompt=request.enhance_prompt,
            image=request.images[0].path if request.images else None,
            seed=request.seed if self.enhance_prompt_seed is None else self.enhance_prompt_seed,
        )  # fmt: skip
        (video, audio, _), *negative = encoded
        contexts = PromptContexts(video, audio, *(negative[0][:2] if negative else ()))
        self.prepare_first_builds(request, contexts)
        return contexts

    def prepare_first_builds(self, request: GenerationRequest, contexts: PromptContexts) -> None:
        """Have the next DiT load build, while it waits for its reads, what the first forward of
        each stage and the audio decode would build on first use (cuDNN graphs on CUDA: about
        0.4 s for a two-stage run's first forward, 0.3 s for its second stage, 0.7 s for the
        audio decode on an H200). A pipeline whose shapes differ (conditioning tokens) loses
        nothing: what is missed is built on first use as before."""
        from functools import partial

        from LTX_2_MLX.loader.transformer import transformer_config
        from LTX_2_MLX.model.transformer.warm_up import attention_shapes
        from LTX_2_MLX.pipelines.common import half_and_full_shapes, output_shape
        from LTX_2_MLX.pipelines.denoising.states import PipelineComponents, audio_latent_shape, video_latent_shape

        ledger = self.ledger
        config = transformer_config(ledger.checkpoint)
        components = PipelineComponents.for_transformer(config, ledger.audio_latent_channels)
        audio = request.generate_audio and ledger.has_audio and contexts.audio is not None
        shapes = {}
        for shape in half_and_full_shapes(request) if self.two_stage else (output_shape(request),):
            audio_tokens = audio_latent_shape(shape, components).token_count() if audio else None
            video_tokens = video_latent_shape(shape, components).token_count()
            context_tokens = contexts.video.shape[1], contexts.audio.shape[1] if audio else None
            shapes.update(dict.fromkeys(attention_shapes(config, video_tokens, audio_tokens, *context_tokens)))
        tasks = [partial(shape.build, ledger.dtype) for shape in shapes]
        if audio:
            latent = audio_latent_shape(output_shape(request), components)
            tasks.insert(0, partial(ledger.warm_audio_decode, latent.frames, latent.mel_bins))
        ledger.prepare_while_loading(tasks)

    def guiders(
        self, request: GenerationRequest, prompts: PromptContexts
    ) -> tuple[MultiModalGuiderFactory | None, MultiModalGuiderFactory | None]:
        """Multi-modal guidance per stream from the request's params; none when unguided. A
        stream that is not generated (audio without `generate_audio`) is not guided."""
        if not self.guided:
            return None, None
        video = create_multimodal_guider_factory(request.video_guider_params, prompts.negative_video)
        if not request.generate_audio:
            return video, None
        return video, create_multimodal_guider_factory(request.audio_guider_params, prompts.negative_audio)

    def stage_progress(self, stage: str) -> StepCallback | None:
        """The denoising loop's step callback for one stage, reporting to `progress`."""
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    def decode(
        self, request: GenerationRequest, video_latent: mx.array, audio_latent: mx.array | None
    ) -> GeneratedVideo:
        """Audio (when generated) and video decoded; frames stream out chunk by chunk."""
        audio_latent = audio_latent if request.generate_audio else None
        return decode_outputs(self.ledger, video_latent, audio_latent, request.frame_rate, request.seed, self.tiling)

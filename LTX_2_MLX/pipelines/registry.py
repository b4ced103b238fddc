"""The pipelines by name, each with what it needs: its size rule, its required files, whether
it is guided. `ltx2-mlx generate` only looks pipelines up here; checking a request needs no
model, so every rule is applied before anything loads."""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import GeneratedVideo, ImageConditioningInput, PipelineParams, check_generation_size
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.two_stage_hq import HQ_PARAMS


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation is asked for, whatever the pipeline."""

    prompt: str
    seed: int
    height: int
    width: int
    num_frames: int
    frame_rate: float
    negative_prompt: str = ""
    num_inference_steps: int = 40
    video_guider_params: MultiModalGuiderParams = field(default_factory=MultiModalGuiderParams)
    audio_guider_params: MultiModalGuiderParams = field(default_factory=MultiModalGuiderParams)
    images: tuple[ImageConditioningInput, ...] = ()
    enhance_prompt: bool = False
    distilled_lora: tuple[str, float] | None = None
    video_conditioning: tuple[tuple[str, float], ...] = ()
    conditioning_attention_strength: float = 1.0
    distilled_lora_strength_stage_1: float = 0.25  # two-stage-hq fuses the distilled LoRA in stage 1 too
    audio_path: str | None = None  # a2vid: the audio to follow, read from start for at most max duration (s)
    audio_start_time: float = 0.0
    audio_max_duration: float | None = None
    source_video: str | None = None  # retake: the clip to change, and the range to regenerate (seconds)
    start_time: float | None = None
    end_time: float | None = None
    regenerate_video: bool = True
    regenerate_audio: bool = True


Runner = Callable[[ModelLedger, TilingConfig | None, GenerationRequest], GeneratedVideo]


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    summary: str
    run: Runner
    size_multiple: int = 32
    guided: bool = True  # runs the negative prompt and guidance (a dev checkpoint)
    needs_spatial_upscaler: bool = False
    needs_distilled_lora: bool = False
    needs_lora: bool = False
    needs_video_conditioning: bool = False
    min_images: int = 0
    needs_audio: bool = False  # a2vid: generates video to the given --audio-path
    needs_source_video: bool = False  # retake: size, frame count and rate are the clip's
    defaults: PipelineParams | None = None  # its own defaults; None: the checkpoint version's

    def with_source_video(self, request: GenerationRequest) -> GenerationRequest:
        """The request at the source clip's size, frame count and rate, once the clip and the
        time range are checked (decoding it, no model); unchanged for other pipelines."""
        if not self.needs_source_video or request.source_video is None:
            return request
        from LTX_2_MLX.pipelines.retake import check_time_range, probe_clip

        if request.start_time is None or request.end_time is None:
            raise ValueError(f"--pipeline {self.name} regenerates a time range: add --start-time S --end-time S")
        clip = probe_clip(request.source_video)
        check_time_range(clip, request.start_time, request.end_time)
        return replace(request, height=clip.height, width=clip.width, num_frames=clip.num_frames, frame_rate=clip.fps)

    def check(self, request: GenerationRequest, spatial_upscaler: bool, loras: int) -> None:
        """Refuse a request this pipeline cannot run, naming the option that fixes it."""
        check_generation_size(request.height, request.width, request.num_frames, divisor=self.size_multiple)
        name = f"--pipeline {self.name}"
        if self.needs_spatial_upscaler and not spatial_upscaler:
            raise ValueError(f"{name} needs the latent x2 upscaler: add --spatial-upscaler-path FILE")
        if self.needs_distilled_lora and request.distilled_lora is None:
            raise ValueError(f"{name} needs the distilled LoRA for its second stage: add --distilled-lora FILE 0.6")
        if self.needs_lora and not loras:
            raise ValueError(f"{name} needs the IC-LoRA: add --lora FILE 1.0")
        if self.needs_video_conditioning and not request.video_conditioning:
            raise ValueError(f"{name} needs a reference video: add --video-conditioning FILE 1.0")
        if self.needs_source_video and request.source_video is None:
            raise ValueError(f"{name} changes an existing clip: add --video-path FILE --start-time S --end-time S")
        if self.needs_source_video and not (request.regenerate_video or request.regenerate_audio):
            raise ValueError(f"{name} with --keep-video and --keep-audio regenerates nothing; drop one of them")
        if self.needs_audio and request.audio_path is None:
            raise ValueError(f"{name} generates video to given audio: add --audio-path FILE")
        if len(request.images) < self.min_images:
            raise ValueError(f"{name} needs at least {self.min_images} images: add --image FILE FRAME STRENGTH for each")
        for option, given, used in (
            ("--distilled-lora", request.distilled_lora is not None, self.needs_distilled_lora),
            ("--video-conditioning", bool(request.video_conditioning), self.needs_video_conditioning),
            ("--spatial-upscaler-path", spatial_upscaler, self.needs_spatial_upscaler),
            ("--audio-path", request.audio_path is not None, self.needs_audio),
            ("--audio-start-time/--audio-max-duration",
             request.audio_start_time != 0.0 or request.audio_max_duration is not None, self.needs_audio),
            ("--video-path", request.source_video is not None, self.needs_source_video),
            ("--start-time/--end-time", (request.start_time, request.end_time) != (None, None), self.needs_source_video),
            ("--keep-video/--keep-audio", not (request.regenerate_video and request.regenerate_audio),
             self.needs_source_video),
            ("--image", bool(request.images), not self.needs_source_video),
        ):
            if given and not used:
                raise ValueError(f"{name} does not use {option}; drop it or choose a pipeline that does")
        for image in request.images:
            if not 0 <= image.frame_idx < request.num_frames:
                raise ValueError(
                    f"--image {image.path} {image.frame_idx}: the frame must be in [0, {request.num_frames - 1}]"
                )
            if not 0.0 <= image.strength <= 1.0:
                raise ValueError(f"--image {image.path}: strength {image.strength} must be in [0, 1]")


def _one_stage(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline

    return TI2VidOneStagePipeline(ledger, tiling)(**_guided_arguments(request))


def _two_stage(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.two_stage import TI2VidTwoStagesPipeline

    return TI2VidTwoStagesPipeline(ledger, [request.distilled_lora], tiling)(**_guided_arguments(request))


def _two_stage_hq(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.two_stage_hq import TI2VidTwoStagesHQPipeline

    path, strength = request.distilled_lora
    stage_1 = request.distilled_lora_strength_stage_1
    return TI2VidTwoStagesHQPipeline(ledger, path, stage_1, strength, tiling)(**_guided_arguments(request))


def _keyframes(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.two_stage import KeyframeInterpolationPipeline

    return KeyframeInterpolationPipeline(ledger, [request.distilled_lora], tiling)(**_guided_arguments(request))


def _distilled(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.two_stage import DistilledPipeline

    return DistilledPipeline(ledger, tiling)(**_shared_arguments(request))


def _ic_lora(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.ic_lora import ICLoraPipeline

    return ICLoraPipeline(ledger, tiling)(
        **_shared_arguments(request), video_conditioning=list(request.video_conditioning),
        conditioning_attention_strength=request.conditioning_attention_strength,
    )  # fmt: skip


def _retake(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest, distilled: bool = False):
    from LTX_2_MLX.pipelines.retake import RetakePipeline

    guided = {} if distilled else dict(
        negative_prompt=request.negative_prompt, num_inference_steps=request.num_inference_steps,
        video_guider_params=request.video_guider_params, audio_guider_params=request.audio_guider_params,
    )  # fmt: skip
    return RetakePipeline(ledger, tiling, distilled=distilled)(
        video_path=request.source_video, prompt=request.prompt, start_time=request.start_time,
        end_time=request.end_time, seed=request.seed, regenerate_video=request.regenerate_video,
        regenerate_audio=request.regenerate_audio, enhance_prompt=request.enhance_prompt, **guided,
    )  # fmt: skip


def _retake_distilled(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    return _retake(ledger, tiling, request, distilled=True)


def _a2vid(ledger: ModelLedger, tiling: TilingConfig | None, request: GenerationRequest) -> GeneratedVideo:
    from LTX_2_MLX.pipelines.a2vid import A2VidPipelineTwoStage

    arguments = _guided_arguments(request)
    del arguments["audio_guider_params"]  # the audio is given, not generated
    duration = request.audio_max_duration or request.num_frames / request.frame_rate  # as ltx-pipelines' main
    return A2VidPipelineTwoStage(ledger, [request.distilled_lora], tiling)(
        **arguments, audio_path=request.audio_path, audio_start_time=request.audio_start_time,
        audio_max_duration=duration,
    )  # fmt: skip


def _shared_arguments(request: GenerationRequest) -> dict:
    return dict(
        prompt=request.prompt, seed=request.seed, height=request.height, width=request.width,
        num_frames=request.num_frames, frame_rate=request.frame_rate, images=list(request.images),
        enhance_prompt=request.enhance_prompt,
    )  # fmt: skip


def _guided_arguments(request: GenerationRequest) -> dict:
    return dict(
        **_shared_arguments(request), negative_prompt=request.negative_prompt,
        num_inference_steps=request.num_inference_steps, video_guider_params=request.video_guider_params,
        audio_guider_params=request.audio_guider_params,
    )  # fmt: skip


PIPELINES: dict[str, PipelineSpec] = {
    spec.name: spec
    for spec in (
        PipelineSpec("one-stage", "guided (CFG + STG + modality guidance) at the target size", _one_stage),
        PipelineSpec(
            "two-stage", "guided at half size, latent x2 upscale, 3 refining steps with the distilled LoRA",
            _two_stage, size_multiple=64, needs_spatial_upscaler=True, needs_distilled_lora=True,
        ),
        PipelineSpec(
            "two-stage-hq", "two-stage with the res_2s sampler (15 steps, no STG), the distilled LoRA in both "
            "stages; default 1920x1088",
            _two_stage_hq, size_multiple=64, needs_spatial_upscaler=True, needs_distilled_lora=True, defaults=HQ_PARAMS,
        ),
        PipelineSpec(
            "distilled", "a distilled checkpoint: 8 + 3 unguided steps, half size then upscaled",
            _distilled, size_multiple=64, guided=False, needs_spatial_upscaler=True,
        ),
        PipelineSpec(
            "keyframes", "two-stage interpolation: every --image guides as a keyframe at its frame",
            _keyframes, size_multiple=64, needs_spatial_upscaler=True, needs_distilled_lora=True, min_images=2,
        ),
        PipelineSpec(
            "ic-lora", "a distilled checkpoint steered by --video-conditioning through the IC-LoRA given with --lora",
            _ic_lora, size_multiple=64, guided=False, needs_spatial_upscaler=True, needs_lora=True,
            needs_video_conditioning=True,
        ),
        PipelineSpec(
            "a2vid", "video to the sound of --audio-path (held fixed): guided at half size, x2, distilled-LoRA refine",
            _a2vid, size_multiple=64, needs_spatial_upscaler=True, needs_distilled_lora=True, needs_audio=True,
        ),
        PipelineSpec(
            "retake", "regenerate --start-time..--end-time of the clip --video-path, guided, keeping the rest",
            _retake, needs_source_video=True,
        ),
        PipelineSpec(
            "retake-distilled", "retake with a distilled checkpoint: 8 unguided steps",
            _retake_distilled, guided=False, needs_source_video=True,
        ),
    )
}  # fmt: skip

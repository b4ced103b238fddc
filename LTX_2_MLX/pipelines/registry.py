"""The pipelines by name, each with what it needs: its size rule, its required files, whether
it is guided. `ltx2-mlx generate` only looks pipelines up here; checking a request needs no
model, so every rule is applied before anything loads."""

from collections.abc import Callable
from dataclasses import dataclass, field

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.model.video_vae import TilingConfig
from LTX_2_MLX.pipelines.common import GeneratedVideo, ImageConditioningInput, check_generation_size
from LTX_2_MLX.pipelines.model_ledger import ModelLedger


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
        if len(request.images) < self.min_images:
            raise ValueError(f"{name} needs at least {self.min_images} images: add --image FILE FRAME STRENGTH for each")
        for option, given, used in (
            ("--distilled-lora", request.distilled_lora is not None, self.needs_distilled_lora),
            ("--video-conditioning", bool(request.video_conditioning), self.needs_video_conditioning),
            ("--spatial-upscaler-path", spatial_upscaler, self.needs_spatial_upscaler),
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
    )
}  # fmt: skip

"""What a generation is asked for, the same for every pipeline, and the reference's defaults
(ltx-pipelines `utils/constants.py` and `utils/args.py`)."""

from dataclasses import dataclass, field, replace
from pathlib import Path

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.loader.checkpoint import read_metadata
from LTX_2_MLX.pipelines.media_io import DEFAULT_IMAGE_CRF

DEFAULT_LORA_STRENGTH = 1.0


@dataclass(frozen=True)
class ImageConditioningInput:
    """An image to hold at a pixel frame: frame 0 replaces the first latent, later frames
    are added as keyframe tokens. `crf` 0 skips the H.264 round trip."""

    path: str
    frame_idx: int = 0
    strength: float = 1.0
    crf: int = DEFAULT_IMAGE_CRF


@dataclass(frozen=True)
class PipelineParams:
    """The reference's defaults (ltx-pipelines `PipelineParams`): two-stage pipelines generate
    at stage 1's size and output twice it."""

    seed: int = 10
    stage_1_height: int = 512
    stage_1_width: int = 768
    num_frames: int = 121
    frame_rate: float = 24.0
    num_inference_steps: int = 40
    video_guider_params: MultiModalGuiderParams = field(
        default_factory=lambda: MultiModalGuiderParams(
            cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
        )
    )
    audio_guider_params: MultiModalGuiderParams = field(
        default_factory=lambda: MultiModalGuiderParams(
            cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, skip_step=0, stg_blocks=[29]
        )
    )

    def size(self, two_stage: bool) -> tuple[int, int]:
        """(height, width) of the output."""
        scale = 2 if two_stage else 1
        return self.stage_1_height * scale, self.stage_1_width * scale


LTX_2_PARAMS = PipelineParams()
LTX_2_3_PARAMS = replace(
    LTX_2_PARAMS,
    num_inference_steps=30,
    video_guider_params=replace(LTX_2_PARAMS.video_guider_params, stg_blocks=[28]),
    audio_guider_params=replace(LTX_2_PARAMS.audio_guider_params, stg_blocks=[28]),
)


def detect_params(checkpoint_path: str | Path) -> PipelineParams:
    """LTX-2.3 defaults when the checkpoint's metadata says model_version 2.3.x."""
    version = read_metadata(checkpoint_path).get("model_version", "")
    return LTX_2_3_PARAMS if version.startswith("2.3") else LTX_2_PARAMS


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation is asked for, whatever the pipeline; each pipeline refuses the
    fields it does not use (`Pipeline.check`). Models and LoRAs fused into the DiT for the whole
    run belong to the `ModelLedger`, not here."""

    prompt: str = ""
    seed: int = LTX_2_PARAMS.seed
    height: int = LTX_2_PARAMS.stage_1_height
    width: int = LTX_2_PARAMS.stage_1_width
    num_frames: int = LTX_2_PARAMS.num_frames
    frame_rate: float = LTX_2_PARAMS.frame_rate
    negative_prompt: str = ""
    num_inference_steps: int = LTX_2_PARAMS.num_inference_steps
    video_guider_params: MultiModalGuiderParams = field(default_factory=MultiModalGuiderParams)
    audio_guider_params: MultiModalGuiderParams = field(default_factory=MultiModalGuiderParams)
    images: tuple[ImageConditioningInput, ...] = ()
    enhance_prompt: bool = False
    generate_audio: bool = True  # False: the DiT runs the video stream alone; a silent video
    # Two-stage pipelines: the distilled LoRA fused for stage 2 (two-stage-hq: and stage 1, at its own strength).
    distilled_lora: tuple[str, float] | None = None
    distilled_lora_strength_stage_1: float = 0.25
    # ic-lora: reference videos, how much the generated tokens attend to them (a scalar, or a
    # grayscale mask video times a scalar), and whether to stop after stage 1.
    video_conditioning: tuple[tuple[str, float], ...] = ()
    conditioning_attention_strength: float = 1.0
    conditioning_attention_mask: tuple[str, float] | None = None
    skip_stage_2: bool = False
    # a2vid: the audio to follow, read from audio_start_time for at most audio_max_duration s.
    audio_path: str | None = None
    audio_start_time: float = 0.0
    audio_max_duration: float | None = None
    # retake / extend: the clip to change; retake regenerates [start_time, end_time) s, extend
    # adds extend_frames (a multiple of 8) frames after it.
    source_video: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    regenerate_video: bool = True
    regenerate_audio: bool = True
    extend_frames: int = 0

    def __post_init__(self):
        # Lists from Python callers become tuples, so a request stays hashable and immutable.
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "video_conditioning", tuple(tuple(item) for item in self.video_conditioning))
        for name in ("distilled_lora", "conditioning_attention_mask"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

"""Generation pipelines, all over the one denoising loop in `pipelines.denoising`.

    from LTX_2_MLX.pipelines import DistilledPipeline, ModelLedger

    ledger = ModelLedger("ltx-2.3-22b-distilled.safetensors", gemma_path="gemma-3-12b-it",
                         spatial_upscaler_path="ltx-2.3-spatial-upscaler-x2-1.1.safetensors")
    video = DistilledPipeline(ledger)(prompt="A red fox runs through fresh snow", num_frames=49)
    frames = video.all_frames()  # (49, H, W, 3) uint8; video.audio: (waveform, sample_rate)

Every pipeline takes the same call: a `GenerationRequest` or its fields as keywords, plus
`noiser` and `progress`; `PIPELINES` maps the CLI's names to the classes.
"""

from LTX_2_MLX.pipelines.a2vid import A2VidPipelineTwoStage
from LTX_2_MLX.pipelines.base import Pipeline, ProgressCallback
from LTX_2_MLX.pipelines.common import GeneratedVideo
from LTX_2_MLX.pipelines.extend import ExtendPipeline
from LTX_2_MLX.pipelines.ic_lora import ICLoraPipeline
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.registry import PIPELINES
from LTX_2_MLX.pipelines.request import GenerationRequest, ImageConditioningInput, PipelineParams
from LTX_2_MLX.pipelines.retake import RetakeDistilledPipeline, RetakePipeline
from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline
from LTX_2_MLX.pipelines.two_stage import DistilledPipeline, KeyframeInterpolationPipeline, TI2VidTwoStagesPipeline
from LTX_2_MLX.pipelines.two_stage_hq import TI2VidTwoStagesHQPipeline

__all__ = [
    "PIPELINES",
    "A2VidPipelineTwoStage",
    "DistilledPipeline",
    "ExtendPipeline",
    "GeneratedVideo",
    "GenerationRequest",
    "ICLoraPipeline",
    "ImageConditioningInput",
    "KeyframeInterpolationPipeline",
    "ModelLedger",
    "Pipeline",
    "PipelineParams",
    "ProgressCallback",
    "RetakeDistilledPipeline",
    "RetakePipeline",
    "TI2VidOneStagePipeline",
    "TI2VidTwoStagesHQPipeline",
    "TI2VidTwoStagesPipeline",
]

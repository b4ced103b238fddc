"""The pipelines by name. Each pipeline class carries its own requirements (size rule,
required files, guidedness, defaults) and checks a request without a model; `ltx2-mlx
generate` only looks pipelines up here."""

from LTX_2_MLX.pipelines.a2vid import A2VidPipelineTwoStage
from LTX_2_MLX.pipelines.base import Pipeline
from LTX_2_MLX.pipelines.extend import ExtendPipeline
from LTX_2_MLX.pipelines.ic_lora import ICLoraPipeline
from LTX_2_MLX.pipelines.retake import RetakeDistilledPipeline, RetakePipeline
from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline
from LTX_2_MLX.pipelines.two_stage import DistilledPipeline, KeyframeInterpolationPipeline, TI2VidTwoStagesPipeline
from LTX_2_MLX.pipelines.two_stage_hq import TI2VidTwoStagesHQPipeline

PIPELINES: dict[str, type[Pipeline]] = {
    pipeline.name: pipeline
    for pipeline in (
        TI2VidOneStagePipeline,
        TI2VidTwoStagesPipeline,
        TI2VidTwoStagesHQPipeline,
        DistilledPipeline,
        KeyframeInterpolationPipeline,
        ICLoraPipeline,
        A2VidPipelineTwoStage,
        RetakePipeline,
        RetakeDistilledPipeline,
        ExtendPipeline,
    )
}

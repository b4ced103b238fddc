"""The diffusion math apart from the networks (ltx-core `components/`, `tools.py`, `types.py`)."""

from LTX_2_MLX.components.diffusion_steps import (
    DiffusionStepProtocol,
    EulerDiffusionStep,
    Res2sDiffusionStep,
    to_velocity,
)
from LTX_2_MLX.components.guiders import (
    CFGGuider,
    CFGStarRescalingGuider,
    GuiderProtocol,
    LegacyStatefulAPGGuider,
    LtxAPGGuider,
    MultiModalGuider,
    MultiModalGuiderFactory,
    MultiModalGuiderParams,
    STGGuider,
    create_multimodal_guider_factory,
)
from LTX_2_MLX.components.noisers import GaussianNoiser, InjectedNoiser, Noiser
from LTX_2_MLX.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from LTX_2_MLX.components.schedulers import (
    DISTILLED_SIGMA_VALUES,
    STAGE_2_DISTILLED_SIGMA_VALUES,
    BetaScheduler,
    LinearQuadraticScheduler,
    LTX2Scheduler,
    distilled_sigmas,
)
from LTX_2_MLX.components.tools import AudioLatentTools, LatentTools, VideoLatentTools
from LTX_2_MLX.components.types import (
    AudioLatentShape,
    LatentState,
    SpatioTemporalScaleFactors,
    VideoLatentShape,
    VideoPixelShape,
)

__all__ = [
    "DISTILLED_SIGMA_VALUES",
    "STAGE_2_DISTILLED_SIGMA_VALUES",
    "AudioLatentShape",
    "AudioLatentTools",
    "AudioPatchifier",
    "BetaScheduler",
    "CFGGuider",
    "CFGStarRescalingGuider",
    "DiffusionStepProtocol",
    "EulerDiffusionStep",
    "GaussianNoiser",
    "GuiderProtocol",
    "InjectedNoiser",
    "LatentState",
    "LatentTools",
    "LegacyStatefulAPGGuider",
    "LinearQuadraticScheduler",
    "LTX2Scheduler",
    "LtxAPGGuider",
    "MultiModalGuider",
    "MultiModalGuiderFactory",
    "MultiModalGuiderParams",
    "Noiser",
    "Res2sDiffusionStep",
    "STGGuider",
    "SpatioTemporalScaleFactors",
    "VideoLatentPatchifier",
    "VideoLatentShape",
    "VideoLatentTools",
    "VideoPixelShape",
    "create_multimodal_guider_factory",
    "distilled_sigmas",
    "get_pixel_coords",
    "to_velocity",
]

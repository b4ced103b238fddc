from LTX_2_MLX.model.transformer.config import LTXModelConfig, LTXModelType
from LTX_2_MLX.model.transformer.modality import Modality
from LTX_2_MLX.model.transformer.model import LTXModel, X0Model, to_denoised
from LTX_2_MLX.model.transformer.rope import LTXRopeType

__all__ = ["LTXModel", "LTXModelConfig", "LTXModelType", "LTXRopeType", "Modality", "X0Model", "to_denoised"]

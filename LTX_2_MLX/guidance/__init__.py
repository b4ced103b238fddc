from LTX_2_MLX.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)

__all__ = ["BatchedPerturbationConfig", "Perturbation", "PerturbationConfig", "PerturbationType"]

"""The DiT a process of a parallel run holds, as `ModelLedger.transformer()` hands it out."""

import mlx.core as mx

from LTX_2_MLX.distributed.guidance_parallel import GuidanceParallelTransformer
from LTX_2_MLX.distributed.launch import parallel_group
from LTX_2_MLX.distributed.tensor_parallel import load_sharded_transformer


def parallel_transformer(
    mode: str, checkpoint, dtype: mx.Dtype, loras: list[tuple[str, float]], quantization: str | None
):
    """The X0 transformer for `mode`: "guidance", the whole DiT with passes spread over the
    processes; "tensor", this process's share of every block, the others holding the rest."""
    from LTX_2_MLX.model.transformer import X0Model
    from LTX_2_MLX.quantization import load_prepared_transformer

    group = parallel_group(mode)
    if mode == "tensor":
        return X0Model(load_sharded_transformer(checkpoint, dtype, loras, quantization, group))
    model = load_prepared_transformer(checkpoint, dtype, loras, quantization)
    return GuidanceParallelTransformer(X0Model(model), group)

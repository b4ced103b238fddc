"""Generation across several processes (Macs, or GPUs) with `mx.distributed`, launched by
`mlx.launch`: guidance-parallel (each process a whole DiT and a share of a guided step's
passes) or tensor-parallel (each process a share of every block's weights); in both, the
tiles of the video decode are shared out too, and only rank 0 prints progress."""

from LTX_2_MLX.distributed.decode import SharedTileDecoding, check_same_decode, decode_video_shared
from LTX_2_MLX.distributed.guidance_parallel import GuidanceParallelTransformer
from LTX_2_MLX.distributed.launch import (
    MODES,
    ParallelError,
    agree,
    arguments_digest,
    check_parallel_mode,
    checked_on_every_rank,
    is_writer,
    parallel_group,
)
from LTX_2_MLX.distributed.models import parallel_transformer
from LTX_2_MLX.distributed.tensor_parallel import (
    check_tensor_parallel,
    connect_transformer,
    load_sharded_transformer,
    shard_transformer,
    split_transformer,
)

__all__ = [
    "MODES",
    "GuidanceParallelTransformer",
    "ParallelError",
    "SharedTileDecoding",
    "agree",
    "arguments_digest",
    "check_parallel_mode",
    "check_tensor_parallel",
    "check_same_decode",
    "checked_on_every_rank",
    "connect_transformer",
    "decode_video_shared",
    "is_writer",
    "load_sharded_transformer",
    "parallel_group",
    "parallel_transformer",
    "shard_transformer",
    "split_transformer",
]

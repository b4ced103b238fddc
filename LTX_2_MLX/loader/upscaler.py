"""Latent upscaler files (e.g. ltx-2-spatial-upscaler-x2-1.0.safetensors): a flat `config` in
the metadata and unprefixed ltx-core tensor names."""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, load_converted
from LTX_2_MLX.model.upscaler import LatentUpsampler, LatentUpsamplerConfig

WHAT = "latent upscaler"


def check_upscaler_file(checkpoint: str | Path | Checkpoint) -> LatentUpsamplerConfig:
    """The upscaler config of a file, read from its header alone (refused if it has none)."""
    checkpoint = Checkpoint.open(checkpoint)
    raw_config = checkpoint.config(what=WHAT)
    try:
        return LatentUpsamplerConfig.from_dict(raw_config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{checkpoint.path}: its {WHAT} config is not usable: {err}.") from None


def load_upscaler(checkpoint: str | Path | Checkpoint, dtype: mx.Dtype | None = None) -> LatentUpsampler:
    """Build the upsampler the file's config describes and load its weights strictly.

    dtype: cast floating weights to it (e.g. mx.bfloat16); None keeps the file's dtype.
    """
    checkpoint = Checkpoint.open(checkpoint)
    upscaler = LatentUpsampler(check_upscaler_file(checkpoint))
    return load_converted(
        upscaler, LatentUpsampler.sanitize(checkpoint.load(resident=True)), checkpoint.path, WHAT, dtype
    )

"""Loading the video VAE from an official LTX-2 single-file checkpoint.

Keys, as ltx-core's VAE_{EN,DE}CODER_COMFY_KEYS_FILTER read them: `vae.encoder.*`,
`vae.decoder.*` and `vae.per_channel_statistics.*` (shared by both halves); the architecture
comes from the `vae` section of the config in the file's metadata.
"""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, load_converted
from LTX_2_MLX.model.video_vae import PerChannelStatistics, VideoVAE, VideoVAEConfig
from LTX_2_MLX.model.video_vae.video_vae import sanitize

SHARED_STATISTICS_PREFIX = "vae.per_channel_statistics."


def video_vae_config(checkpoint: str | Path | Checkpoint) -> VideoVAEConfig:
    checkpoint = Checkpoint.open(checkpoint)
    try:
        return VideoVAEConfig.from_dict(checkpoint.config("vae", what="video VAE")["vae"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint.path}: unusable 'vae' config: {err}") from None


def _converted_weights(checkpoint: Checkpoint, parts: list[str]) -> dict[str, mx.array]:
    """The module's (lazy) weights for the VAE `parts`, from the file's tensors."""
    groups = checkpoint.load_groups([SHARED_STATISTICS_PREFIX, *(f"vae.{part}." for part in parts)], resident=True)
    shared_statistics = PerChannelStatistics.sanitize(groups[SHARED_STATISTICS_PREFIX])
    weights = {}
    for part in parts:
        tensors = groups[f"vae.{part}."]
        if not tensors:
            raise CheckpointError(f"{checkpoint.path}: no 'vae.{part}.*' weights; this file holds no video VAE {part}.")
        # ltx-core maps `vae.per_channel_statistics.*` and `vae.<part>.per_channel_statistics.*`
        # to the same module keys; the shared copy is the one official files carry.
        own = {k: v for k, v in tensors.items() if k.startswith("per_channel_statistics.")}
        statistics = PerChannelStatistics.sanitize({k.split(".", 1)[1]: v for k, v in own.items()})
        statistics.update(shared_statistics)
        tensors = {k: v for k, v in tensors.items() if k not in own}
        weights.update({f"{part}.{k}": v for k, v in sanitize(tensors).items()})
        weights.update({f"{part}.per_channel_statistics.{k}": v for k, v in statistics.items()})
    return weights


def load_video_vae(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype | None = None,
    encoder: bool = True,
    decoder: bool = True,
) -> VideoVAE:
    """The VAE of the checkpoint, in `dtype` (the file's own when None).

    `encoder=False` / `decoder=False` skip a half that is not needed (the decoder alone is
    enough to turn latents into video). Missing, unexpected or misshapen weights raise
    CheckpointError.
    """
    checkpoint = Checkpoint.open(checkpoint)
    vae = VideoVAE(video_vae_config(checkpoint), encoder=encoder, decoder=decoder)
    parts = [part for part in ("encoder", "decoder") if getattr(vae, part) is not None]
    return load_converted(vae, _converted_weights(checkpoint, parts), checkpoint.path, "video VAE", dtype)


def load_latent_statistics(checkpoint: str | Path | Checkpoint, dtype: mx.Dtype | None = None) -> PerChannelStatistics:
    """The per-channel latent statistics the VAE encoder normalises with (and the decoder
    un-normalises with), as the encoder `load_video_vae` builds would hold them, in `dtype`:
    read from their byte ranges alone, so neither half of the VAE is built or mapped."""
    checkpoint = Checkpoint.open(checkpoint)
    statistics = PerChannelStatistics(video_vae_config(checkpoint).latent_channels)
    weights = {}
    # The encoder's own copy, overridden by the shared one, as load_video_vae does.
    for prefix in ("vae.encoder.per_channel_statistics.", SHARED_STATISTICS_PREFIX):
        stored = {
            key: prefix + key for key in PerChannelStatistics.CHECKPOINT_KEYS if prefix + key in checkpoint.entries
        }
        weights.update(
            PerChannelStatistics.sanitize({key: checkpoint.read_tensor(name) for key, name in stored.items()})
        )
    return load_converted(statistics, weights, checkpoint.path, "video VAE latent statistics", dtype)

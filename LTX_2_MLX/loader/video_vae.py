"""Loading the video VAE from an official LTX-2 single-file checkpoint.

Keys, as ltx-core's VAE_{EN,DE}CODER_COMFY_KEYS_FILTER read them: `vae.encoder.*`,
`vae.decoder.*` and `vae.per_channel_statistics.*` (shared by both halves); the architecture
comes from the `vae` section of the config in the file's metadata.
"""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import CheckpointError, load_module_weights, load_tensors, read_config
from LTX_2_MLX.model.video_vae import PerChannelStatistics, VideoVAE, VideoVAEConfig
from LTX_2_MLX.model.video_vae.video_vae import sanitize


def load_video_vae(
    path: str | Path,
    dtype: mx.Dtype | None = None,
    encoder: bool = True,
    decoder: bool = True,
) -> VideoVAE:
    """The VAE of the checkpoint at `path`, in `dtype` (the file's own when None).

    `encoder=False` / `decoder=False` skip a half that is not needed (the decoder alone is
    enough to turn latents into video). Missing, unexpected or misshapen weights raise
    CheckpointError.
    """
    config_dict = read_config(path, "vae", what="video VAE")["vae"]
    try:
        config = VideoVAEConfig.from_dict(config_dict)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unusable 'vae' config: {err}") from None
    vae = VideoVAE(config, encoder=encoder, decoder=decoder)

    shared_statistics = PerChannelStatistics.sanitize(load_tensors(path, "vae.per_channel_statistics."))
    weights = {}
    for part in ("encoder", "decoder"):
        if getattr(vae, part) is None:
            continue
        tensors = load_tensors(path, f"vae.{part}.")
        if not tensors:
            raise CheckpointError(f"{path}: no 'vae.{part}.*' weights; this file holds no video VAE {part}.")
        # ltx-core maps `vae.per_channel_statistics.*` and `vae.<part>.per_channel_statistics.*`
        # to the same module keys; the shared copy is the one official files carry.
        own = {k: v for k, v in tensors.items() if k.startswith("per_channel_statistics.")}
        statistics = PerChannelStatistics.sanitize({k.split(".", 1)[1]: v for k, v in own.items()})
        statistics.update(shared_statistics)
        tensors = {k: v for k, v in tensors.items() if k not in own}
        weights.update({f"{part}.{k}": v for k, v in sanitize(tensors).items()})
        weights.update({f"{part}.per_channel_statistics.{k}": v for k, v in statistics.items()})
    load_module_weights(vae, weights, path, "video VAE", dtype)
    mx.eval(vae.parameters())
    return vae.eval()

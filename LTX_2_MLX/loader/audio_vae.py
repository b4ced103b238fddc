"""Loading the audio VAE and the vocoder from an official LTX-2 single-file checkpoint.

Keys, as ltx-core's AUDIO_VAE_{EN,DE}CODER_COMFY_KEYS_FILTER and VOCODER_COMFY_KEYS_FILTER read
them: `audio_vae.encoder.*`, `audio_vae.decoder.*`, `audio_vae.per_channel_statistics.*`
(shared by both halves) and `vocoder.*` (LTX-2.3: `vocoder.vocoder.*`, `vocoder.bwe_generator.*`,
`vocoder.mel_stft.*`). The architectures come from the `audio_vae` / `vocoder` sections of the
config in the file's metadata.
"""

from pathlib import Path

import mlx.core as mx

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, load_converted
from LTX_2_MLX.model.audio_vae import (
    AudioVAE,
    AudioVAEConfig,
    Vocoder,
    VocoderConfig,
    VocoderWithBWE,
    build_vocoder,
)
from LTX_2_MLX.model.audio_vae import audio_vae as audio_vae_module
from LTX_2_MLX.model.audio_vae import vocoder as vocoder_module

SHARED_STATISTICS_PREFIX = "audio_vae.per_channel_statistics."


def load_audio_vae(
    checkpoint: str | Path | Checkpoint,
    dtype: mx.Dtype | None = None,
    encoder: bool = True,
    decoder: bool = True,
) -> AudioVAE:
    """The audio VAE of the checkpoint, in `dtype` (the file's own when None).

    `encoder=False` skips the encoder (decoding latents needs only the decoder), `decoder=False`
    the decoder. Missing, unexpected or misshapen weights raise CheckpointError.
    """
    checkpoint = Checkpoint.open(checkpoint)
    config = _section_config(checkpoint, "audio_vae", "audio VAE", AudioVAEConfig.from_section)
    vae = AudioVAE(config, encoder=encoder, decoder=decoder)
    parts = [part for part in ("encoder", "decoder") if getattr(vae, part) is not None]
    return load_converted(vae, _audio_vae_weights(checkpoint, parts), checkpoint.path, "audio VAE", dtype)


def load_vocoder(checkpoint: str | Path | Checkpoint, dtype: mx.Dtype | None = None) -> Vocoder | VocoderWithBWE:
    """The vocoder of the checkpoint: a HiFi-GAN `Vocoder` (LTX-2) or a BigVGAN
    `VocoderWithBWE` (LTX-2.3), in `dtype` (the file's own when None)."""
    checkpoint = Checkpoint.open(checkpoint)
    config = _section_config(checkpoint, "vocoder", "vocoder", VocoderConfig.from_section)
    return load_converted(
        build_vocoder(config), _vocoder_weights(checkpoint, config), checkpoint.path, "vocoder", dtype
    )


def _section_config(checkpoint: Checkpoint, name: str, what: str, parse):
    """The config section `name` of the file's metadata, parsed; CheckpointError when unusable."""
    section = checkpoint.config(name, what=what)[name]
    try:
        return parse(section)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint.path}: unusable '{name}' config: {err}") from None


def _audio_vae_weights(checkpoint: Checkpoint, parts: list[str]) -> dict[str, mx.array]:
    """The module's (lazy) weights for the audio VAE `parts`, from the file's tensors."""
    groups = checkpoint.load_groups(
        [SHARED_STATISTICS_PREFIX, *(f"audio_vae.{part}." for part in parts)], resident=True
    )
    statistics = {f"per_channel_statistics.{k}": v for k, v in groups[SHARED_STATISTICS_PREFIX].items()}
    weights = {}
    for part in parts:
        tensors = groups[f"audio_vae.{part}."]
        if not tensors:
            raise CheckpointError(
                f"{checkpoint.path}: no 'audio_vae.{part}.*' weights; this file holds no audio VAE {part} "
                f"(load it with {part}=False if you do not need it)."
            )
        # The shared copy wins over a part's own, as ltx-core's key filter maps both to one key.
        tensors.update(statistics)
        weights.update({f"{part}.{k}": v for k, v in audio_vae_module.sanitize(tensors).items()})
    return weights


def _vocoder_weights(checkpoint: Checkpoint, config: VocoderConfig) -> dict[str, mx.array]:
    """The vocoder module's (lazy) weights, from the file's tensors."""
    tensors = checkpoint.load("vocoder.", resident=True)
    if not tensors:
        raise CheckpointError(f"{checkpoint.path}: no 'vocoder.*' weights; this file holds no vocoder.")
    return vocoder_module.sanitize(tensors, config)

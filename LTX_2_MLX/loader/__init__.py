"""Checkpoint loading: each model part has its own module here; the public loaders are
re-exported lazily so importing one part does not import them all."""

from importlib import import_module

from LTX_2_MLX.loader.checkpoint import Checkpoint, CheckpointError, load_tensors, read_config

_LOADERS = {
    "load_transformer": "transformer",
    "load_video_vae": "video_vae",
    "load_latent_statistics": "video_vae",
    "load_text_encoder": "text_encoder",
    "load_embeddings_processor": "text_encoder",
    "load_upscaler": "upscaler",
    "load_audio_vae": "audio_vae",
    "load_vocoder": "audio_vae",
}

__all__ = ["Checkpoint", "CheckpointError", "load_tensors", "read_config", *_LOADERS]


def __getattr__(name: str):
    if name in _LOADERS:
        return getattr(import_module(f"LTX_2_MLX.loader.{_LOADERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

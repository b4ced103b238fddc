"""LTX-2 audio-video diffusion, reimplemented in MLX."""

__version__ = "0.1.0"

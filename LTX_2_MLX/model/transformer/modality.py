from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class Modality:
    """One stream's input to the transformer (video or audio), in the reference's layout.

    latent: (B, T, C) patchified tokens. sigma: (B,) the step's noise level (drives the
    cross-modal AdaLN). timesteps: (B, T) or (B, T, 1) per-token noise level (sigma times the
    denoise mask). positions: (B, 3, T, 2) video [start, end) coordinates in (time s, h px,
    w px), (B, 1, T, 2) audio. context: (B, S, D) text features. context_mask: (B, S) of 0/1.
    attention_mask: (B, T, T) in [0, 1], 1 = full attention.
    """

    latent: mx.array
    sigma: mx.array
    timesteps: mx.array
    positions: mx.array
    context: mx.array
    enabled: bool = True
    context_mask: mx.array | None = None
    attention_mask: mx.array | None = None

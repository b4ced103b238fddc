"""Tiny seeded ltx-core transformers saved as official-layout checkpoints, and reference inputs.

Shared by the transformer tests and the denoising-loop tests.
"""

import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator, LTXVideoOnlyModelConfigurator
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, VideoLatentShape
from reference import prefixed, save_checkpoint, seed_module_

import mlx.core as mx
from LTX_2_MLX.guidance import perturbations as mlx_perturbations
from LTX_2_MLX.model.transformer import Modality as MlxModality

# Latent geometry of the tiny models: 16 video channels (patch size 1), audio 4 channels x 4
# mel bins. Video 3 latent frames of 4x4; audio 10 latent frames.
VIDEO_CHANNELS = 16
AUDIO_CHANNELS, AUDIO_MEL_BINS = 4, 4
VIDEO_SHAPE = (3, 4, 4)
AUDIO_FRAMES = 10
CONTEXT_TOKENS = 7
CAPTION_CHANNELS = 24

_FIXED = {
    "dropout": 0.0, "attention_bias": True, "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
    "use_linear_projection": False, "only_cross_attention": False, "cross_attention_norm": True,
    "double_self_attention": False, "upcast_attention": False, "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False, "qk_norm": "rms_norm", "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}  # fmt: skip


def tiny_transformer_config(generation: str = "2.0", rope_type: str = "split", precision: str = "float64") -> dict:
    """A full checkpoint config whose `transformer` section describes a 2-layer, 2-head DiT.

    generation "2.0": caption projection in the DiT. "2.3": gated attention, cross-attention
    AdaLN and the caption projection moved before the text connector.
    """
    transformer = {
        **_FIXED,
        "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16,
        "in_channels": VIDEO_CHANNELS, "out_channels": VIDEO_CHANNELS, "cross_attention_dim": 32,
        "audio_num_attention_heads": 2, "audio_attention_head_dim": 8,
        "audio_in_channels": AUDIO_CHANNELS * AUDIO_MEL_BINS, "audio_out_channels": AUDIO_CHANNELS * AUDIO_MEL_BINS,
        "audio_cross_attention_dim": 16, "caption_channels": CAPTION_CHANNELS,
        "norm_eps": 1e-6, "attention_type": "default", "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048], "audio_positional_embedding_max_pos": [20],
        "timestep_scale_multiplier": 1000, "av_ca_timestep_scale_multiplier": 1000,
        "rope_type": rope_type, "frequencies_precision": precision,
        "apply_gated_attention": False, "cross_attention_adaln": False,
    }  # fmt: skip
    if generation == "2.3":
        transformer.update(apply_gated_attention=True, cross_attention_adaln=True, caption_proj_before_connector=True)
    elif generation != "2.0":
        raise ValueError(generation)
    return {"transformer": transformer}


def build_reference_transformer(config: dict, audio: bool = True, seed: int = 0) -> torch.nn.Module:
    configurator = LTXModelConfigurator if audio else LTXVideoOnlyModelConfigurator
    return seed_module_(configurator.from_config(config), seed)


def save_transformer_checkpoint(path, model: torch.nn.Module, config: dict) -> str:
    return save_checkpoint(path, prefixed("model.diffusion_model.", model.state_dict()), config)


def context_width(config: dict, audio: bool) -> int:
    section = config["transformer"]
    if not section.get("caption_proj_before_connector", False):
        return section["caption_channels"]
    if audio:
        return section["audio_num_attention_heads"] * section["audio_attention_head_dim"]
    return section["num_attention_heads"] * section["attention_head_dim"]


def reference_modalities(
    config: dict, batch: int = 3, audio: bool = True, seed: int = 1, self_attention_mask: bool = True
) -> tuple[Modality, Modality | None]:
    """Seeded reference inputs: positions from the latent tools, a first latent frame held
    clean by the denoise mask, per-row sigmas, left-padded context masks."""
    gen = torch.Generator().manual_seed(seed)
    frames, height, width = VIDEO_SHAPE
    video_state = VideoLatentTools(
        VideoLatentPatchifier(1), VideoLatentShape(batch, VIDEO_CHANNELS, frames, height, width), fps=24.0
    ).create_initial_state("cpu", torch.float32)
    tokens = video_state.latent.shape[1]
    sigma = torch.rand(batch, generator=gen) * 0.9 + 0.05
    denoise_mask = video_state.denoise_mask.clone()
    denoise_mask[:, : height * width] = 0.0  # first latent frame is conditioning
    context_mask = torch.ones(batch, CONTEXT_TOKENS, dtype=torch.int64)
    for row in range(batch):
        context_mask[row, : row * 2] = 0  # left padding, different per row
    attention_mask = None
    if self_attention_mask:
        attention_mask = torch.rand(batch, tokens, tokens, generator=gen)
        attention_mask[attention_mask < 0.2] = 0.0
    video = Modality(
        latent=torch.randn(batch, tokens, VIDEO_CHANNELS, generator=gen),
        sigma=sigma,
        timesteps=denoise_mask * sigma[:, None, None],
        positions=video_state.positions,
        context=torch.randn(batch, CONTEXT_TOKENS, context_width(config, audio=False), generator=gen),
        context_mask=context_mask,
        attention_mask=attention_mask,
    )
    if not audio:
        return video, None
    audio_state = AudioLatentTools(
        AudioPatchifier(1), AudioLatentShape(batch, AUDIO_CHANNELS, AUDIO_FRAMES, AUDIO_MEL_BINS)
    ).create_initial_state("cpu", torch.float32)
    audio_sigma = torch.rand(batch, generator=gen) * 0.9 + 0.05
    audio_modality = Modality(
        latent=torch.randn(batch, AUDIO_FRAMES, AUDIO_CHANNELS * AUDIO_MEL_BINS, generator=gen),
        sigma=audio_sigma,
        timesteps=audio_state.denoise_mask * audio_sigma[:, None, None],
        positions=audio_state.positions,
        context=torch.randn(batch, CONTEXT_TOKENS, context_width(config, audio=True), generator=gen),
        context_mask=context_mask,
    )
    return video, audio_modality


def to_mlx_modality(modality: Modality | None, dtype=mx.float32) -> MlxModality | None:
    if modality is None:
        return None

    def convert(t, cast=True):
        if t is None:
            return None
        array = mx.array(t.numpy())
        return array.astype(dtype) if cast and t.is_floating_point() else array

    return MlxModality(
        latent=convert(modality.latent),
        sigma=convert(modality.sigma, cast=False),
        timesteps=convert(modality.timesteps, cast=False),
        positions=convert(modality.positions, cast=False),
        context=convert(modality.context),
        enabled=modality.enabled,
        context_mask=convert(modality.context_mask),
        attention_mask=convert(modality.attention_mask, cast=False),
    )


# Per row: (perturbation type name, blocks) pairs. Row 0 is the plain conditional pass.
MIXED_STG = [
    [],
    [("SKIP_VIDEO_SELF_ATTN", [1]), ("SKIP_AUDIO_SELF_ATTN", [1])],
    [("SKIP_A2V_CROSS_ATTN", None), ("SKIP_V2A_CROSS_ATTN", [0]), ("SKIP_VIDEO_SELF_ATTN", [0])],
]
# Every row perturbed the same way: exercises the "whole batch skips" paths.
ALL_ROWS_STG = [[("SKIP_VIDEO_SELF_ATTN", [1]), ("SKIP_AUDIO_SELF_ATTN", [1]), ("SKIP_V2A_CROSS_ATTN", None)]] * 3


def perturbation_configs(rows: list) -> tuple[BatchedPerturbationConfig, "mlx_perturbations.BatchedPerturbationConfig"]:
    """The same per-row perturbations as (reference, MLX) configs."""
    m = mlx_perturbations
    reference = BatchedPerturbationConfig(
        [PerturbationConfig([Perturbation(PerturbationType[name], blocks) for name, blocks in row]) for row in rows]
    )
    ours = m.BatchedPerturbationConfig(
        [m.PerturbationConfig([m.Perturbation(m.PerturbationType[name], blocks) for name, blocks in row]) for row in rows]
    )
    return reference, ours

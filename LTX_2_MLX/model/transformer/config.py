"""The DiT's configuration, read from the `transformer` section of a checkpoint's config."""

from dataclasses import dataclass, field
from enum import Enum

from LTX_2_MLX.model.transformer.rope import LTXRopeType


class LTXModelType(Enum):
    AudioVideo = "ltx av model"
    VideoOnly = "ltx video only model"

    @property
    def has_audio(self) -> bool:
        return self is LTXModelType.AudioVideo


# Settings the architecture fixes: a checkpoint saying otherwise is not an LTX-2 DiT we can run.
_FIXED = {
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_middle_indices_grid": True,
}
_FIXED_AUDIO_VIDEO = {"use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True}


@dataclass(frozen=True)
class LTXModelConfig:
    model_type: LTXModelType = LTXModelType.AudioVideo
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    in_channels: int = 128
    out_channels: int = 128
    num_layers: int = 48
    cross_attention_dim: int = 4096
    caption_channels: int | None = 3840
    norm_eps: float = 1e-6
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: list[int] = field(default_factory=lambda: [20, 2048, 2048])
    timestep_scale_multiplier: int = 1000
    use_middle_indices_grid: bool = True
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_cross_attention_dim: int = 2048
    audio_positional_embedding_max_pos: list[int] = field(default_factory=lambda: [20])
    av_ca_timestep_scale_multiplier: int = 1
    rope_type: LTXRopeType = LTXRopeType.INTERLEAVED
    double_precision_rope: bool = False
    apply_gated_attention: bool = False
    cross_attention_adaln: bool = False
    # LTX-2.3: the caption projection runs in the text encoder's connector, not in the DiT.
    caption_proj_before_connector: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @classmethod
    def from_checkpoint_config(cls, config: dict, model_type: LTXModelType) -> "LTXModelConfig":
        """Build from the checkpoint's full config dict (its `transformer` section).

        Defaults are the reference configurator's, including av_ca_timestep_scale_multiplier=1:
        real checkpoints state 1000 explicitly, and a missing key must not silently differ.
        """
        section = config.get("transformer")
        if not isinstance(section, dict):
            raise ValueError("the checkpoint config has no 'transformer' section")
        fixed = dict(_FIXED, **(_FIXED_AUDIO_VIDEO if model_type.has_audio else {}))
        for key, expected in fixed.items():
            if section.get(key) != expected:
                raise ValueError(f"transformer config '{key}' is {section.get(key)!r}, but LTX-2 requires {expected!r}")
        caption_proj_before_connector = bool(section.get("caption_proj_before_connector", False))
        if not caption_proj_before_connector and "caption_channels" not in section:
            raise ValueError("transformer config lacks 'caption_channels' (needed for the caption projection)")
        defaults = cls()
        values = {
            name: section.get(name, getattr(defaults, name))
            for name in (
                "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers",
                "cross_attention_dim", "norm_eps", "positional_embedding_theta", "positional_embedding_max_pos",
                "timestep_scale_multiplier", "use_middle_indices_grid", "audio_num_attention_heads",
                "audio_attention_head_dim", "audio_in_channels", "audio_out_channels", "audio_cross_attention_dim",
                "audio_positional_embedding_max_pos", "av_ca_timestep_scale_multiplier", "apply_gated_attention",
                "cross_attention_adaln",
            )
        }  # fmt: skip
        try:
            rope_type = LTXRopeType(section.get("rope_type", "interleaved"))
        except ValueError:
            raise ValueError(
                f"transformer config 'rope_type' is {section.get('rope_type')!r}; expected 'interleaved' or 'split'"
            ) from None
        return cls(
            model_type=model_type,
            caption_channels=section.get("caption_channels"),
            rope_type=rope_type,
            double_precision_rope=section.get("frequencies_precision", False) == "float64",
            caption_proj_before_connector=caption_proj_before_connector,
            **values,
        )

"""The `vae` section of an LTX-2 checkpoint's config, as ltx-core's Video{En,De}coderConfigurator
read it, validated up front so a bad file fails with a message rather than deep in a layer."""

from dataclasses import dataclass, field
from typing import Any

ENCODER_BLOCKS = (
    "res_x",
    "res_x_y",
    "compress_time",
    "compress_space",
    "compress_all",
    "compress_all_x_y",
    "compress_time_res",
    "compress_space_res",
    "compress_all_res",
)
DECODER_BLOCKS = ("res_x", "res_x_y", "compress_time", "compress_space", "compress_all")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
NORM_LAYERS = ("pixel_norm", "group_norm")
# "none" is left out: ltx-core's encoder then halves the channels it returns, which no
# checkpoint relies on.
LOG_VAR_MODES = ("per_channel", "uniform", "constant")

# (time, height, width) stride of each compressing block; the others keep the shape.
BLOCK_STRIDES = {
    "compress_time": (2, 1, 1),
    "compress_time_res": (2, 1, 1),
    "compress_space": (1, 2, 2),
    "compress_space_res": (1, 2, 2),
    "compress_all": (2, 2, 2),
    "compress_all_x_y": (2, 2, 2),
    "compress_all_res": (2, 2, 2),
}


def _normalise_blocks(blocks: Any, allowed: tuple[str, ...], what: str) -> list[tuple[str, dict]]:
    """[name, params] pairs, params an int (num_layers) or a dict, as dicts."""
    if not isinstance(blocks, (list, tuple)):
        raise ValueError(f"vae config: {what} must be a list of [name, params] pairs, got {blocks!r}")
    normalised = []
    for entry in blocks:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"vae config: each of {what} must be [name, params], got {entry!r}")
        name, params = entry
        if name not in allowed:
            raise ValueError(f"vae config: unknown block {name!r} in {what}; expected one of {', '.join(allowed)}")
        params = {"num_layers": params} if isinstance(params, int) else dict(params)
        if name == "res_x" and not isinstance(params.get("num_layers"), int):
            raise ValueError(f"vae config: res_x in {what} needs an integer num_layers, got {params!r}")
        if params.get("inject_noise", False):
            raise ValueError(
                f"vae config: inject_noise=True in {what} is not supported (no LTX-2 checkpoint uses it); "
                "set it to false"
            )
        normalised.append((name, params))
    return normalised


@dataclass
class VideoVAEConfig:
    encoder_blocks: list = field(default_factory=list)
    decoder_blocks: list = field(default_factory=list)
    dims: int = 3
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    norm_layer: str = "pixel_norm"
    latent_log_var: str = "uniform"
    causal_decoder: bool = False
    timestep_conditioning: bool = True
    decoder_base_channels: int = 128
    # ltx-core defaults the encoder to zero padding and the decoder to reflection when the
    # checkpoint does not say.
    spatial_padding_mode: str | None = None

    @classmethod
    def from_dict(cls, vae: dict) -> "VideoVAEConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in vae.items() if k in known})

    def __post_init__(self) -> None:
        if self.dims != 3:
            raise ValueError(f"vae config: dims={self.dims!r} is not supported; LTX-2 video VAEs use dims=3")
        for name in ("in_channels", "out_channels", "latent_channels", "patch_size", "decoder_base_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"vae config: {name} must be a positive integer, got {value!r}")
        if self.patch_size & (self.patch_size - 1):
            raise ValueError(f"vae config: patch_size={self.patch_size} must be a power of 2, e.g. 4")
        if self.norm_layer not in NORM_LAYERS:
            raise ValueError(f"vae config: norm_layer={self.norm_layer!r} must be one of {', '.join(NORM_LAYERS)}")
        if self.latent_log_var not in LOG_VAR_MODES:
            raise ValueError(
                f"vae config: latent_log_var={self.latent_log_var!r} must be one of {', '.join(LOG_VAR_MODES)}"
            )
        if self.spatial_padding_mode is not None and self.spatial_padding_mode not in PADDING_MODES:
            raise ValueError(
                f"vae config: spatial_padding_mode={self.spatial_padding_mode!r} must be one of "
                f"{', '.join(PADDING_MODES)}"
            )
        self.encoder_blocks = _normalise_blocks(self.encoder_blocks, ENCODER_BLOCKS, "encoder_blocks")
        self.decoder_blocks = _normalise_blocks(self.decoder_blocks, DECODER_BLOCKS, "decoder_blocks")

    @property
    def encoder_spatial_padding_mode(self) -> str:
        return self.spatial_padding_mode or "zeros"

    @property
    def decoder_spatial_padding_mode(self) -> str:
        return self.spatial_padding_mode or "reflect"

    def _scale_factors(self, blocks: list[tuple[str, dict]]) -> tuple[int, int, int]:
        time, space = 1, self.patch_size
        for name, _ in blocks:
            stride = BLOCK_STRIDES.get(name, (1, 1, 1))
            time, space = time * stride[0], space * stride[1]
        return time, space, space

    @property
    def encoder_scale_factors(self) -> tuple[int, int, int]:
        """(time, height, width) compression of the encoder: (8, 32, 32) in LTX-2."""
        return self._scale_factors(self.encoder_blocks)

    @property
    def decoder_scale_factors(self) -> tuple[int, int, int]:
        return self._scale_factors(self.decoder_blocks)

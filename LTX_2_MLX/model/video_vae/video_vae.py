"""LTX-2 causal video autoencoder (ltx-core model/video_vae/video_vae.py) in MLX.

Public arrays are (B, C, F, H, W) with pixels in [-1, 1]; inside, activations are
channels-last (B, F, H, W, C). The encoder returns normalised latent means, the decoder takes
normalised latents (it un-normalises them itself).
"""

from collections.abc import Callable, Iterator

import mlx.core as mx
import mlx.nn as nn

from LTX_2_MLX.model.common.one_ahead import OneAhead
from LTX_2_MLX.model.common.timestep_embedding import PixArtAlphaCombinedTimestepSizeEmbeddings
from LTX_2_MLX.model.video_vae.config import BLOCK_STRIDES, VideoVAEConfig
from LTX_2_MLX.model.video_vae.convolution import CausalConv3d, torch_conv_weight_to_mlx
from LTX_2_MLX.model.video_vae.ops import PerChannelStatistics, patchify, unpatchify
from LTX_2_MLX.model.video_vae.resnet import ResnetBlock3D, UNetMidBlock3D, make_norm
from LTX_2_MLX.model.video_vae.sampling import DepthToSpaceUpsample, SpaceToDepthDownsample
from LTX_2_MLX.model.video_vae.tiling import (
    Tile,
    TilingConfig,
    group_tiles_by_temporal_slice,
    prepare_tiles_for_decoding,
    prepare_tiles_for_encoding,
)

# How a tiled decode runs its tiles: given them all and `decode(index)`, which decodes one,
# yields every tile's pixels in order (a parallel run shares them out: distributed/decode.py).
TileDecoding = Callable[[list[Tile], Callable[[int], mx.array]], Iterator[mx.array]]


def decode_tiles_in_order(tiles: list[Tile], decode: Callable[[int], mx.array]) -> Iterator[mx.array]:
    """Every tile decoded here, lazily: a temporal chunk's tiles queue up before it is evaluated."""
    return (decode(index) for index in range(len(tiles)))


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Encoder or decoder weights from the checkpoint (prefix stripped) in this module's layout:
    3D convolution kernels to MLX's (O, kT, kH, kW, I)."""
    return {k: torch_conv_weight_to_mlx(v) if k.endswith("weight") and v.ndim == 5 else v for k, v in weights.items()}


def _check_video_layout(x: mx.array, channels: int, what: str, example: str) -> None:
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(
            f"{what} must be (B, C={channels}, F, H, W) in the reference layout, got shape {tuple(x.shape)}; "
            f"e.g. {example}"
        )


def _make_encoder_block(name: str, params: dict, channels: int, cfg: VideoVAEConfig) -> tuple[nn.Module, int]:
    padding = cfg.encoder_spatial_padding_mode
    if name == "res_x":
        return UNetMidBlock3D(channels, params["num_layers"], cfg.norm_layer, False, padding), channels
    if name == "res_x_y":
        out = channels * params.get("multiplier", 2)
        return ResnetBlock3D(channels, out, cfg.norm_layer, False, padding), out
    if name in ("compress_time", "compress_space", "compress_all"):
        return CausalConv3d(channels, channels, 3, BLOCK_STRIDES[name], padding), channels
    if name == "compress_all_x_y":
        out = channels * params.get("multiplier", 2)
        return CausalConv3d(channels, out, 3, BLOCK_STRIDES[name], padding), out
    # compress_{time,space,all}_res
    out = channels * params.get("multiplier", 2)
    return SpaceToDepthDownsample(channels, out, BLOCK_STRIDES[name], padding), out


def _make_decoder_block(name: str, params: dict, channels: int, cfg: VideoVAEConfig) -> tuple[nn.Module, int]:
    padding = cfg.decoder_spatial_padding_mode
    if name == "res_x":
        block = UNetMidBlock3D(channels, params["num_layers"], cfg.norm_layer, cfg.timestep_conditioning, padding)
        return block, channels
    if name == "res_x_y":
        out = channels // params.get("multiplier", 2)
        return ResnetBlock3D(channels, out, cfg.norm_layer, False, padding), out
    # compress_{time,space,all}: upsampling in the decoder
    reduction = params.get("multiplier", 1)
    residual = params.get("residual", False) if name == "compress_all" else False
    block = DepthToSpaceUpsample(channels, BLOCK_STRIDES[name], residual, reduction, padding)
    return block, channels // reduction


class VideoEncoder(nn.Module):
    """(B, 3, 8k+1, 32h, 32w) pixels in [-1, 1] -> (B, 128, k+1, h, w) normalised latent means."""

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.latent_channels = config.latent_channels
        self.scale_factors = config.encoder_scale_factors
        padding = config.encoder_spatial_padding_mode
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        channels = config.latent_channels
        self.conv_in = CausalConv3d(config.in_channels * config.patch_size**2, channels, 3, 1, padding)
        self.down_blocks = []
        for name, params in config.encoder_blocks:
            block, channels = _make_encoder_block(name, params, channels, config)
            self.down_blocks.append(block)
        self.conv_norm_out = make_norm(config.norm_layer, channels)
        out_channels = config.latent_channels
        out_channels = 2 * out_channels if config.latent_log_var == "per_channel" else out_channels + 1
        self.conv_out = CausalConv3d(channels, out_channels, 3, 1, padding)

    def check_input(self, video: mx.array) -> None:
        _check_video_layout(video, self.config.in_channels, "video", "(1, 3, 97, 512, 768)")
        frames, height, width = video.shape[2:]
        time_scale, height_scale, width_scale = self.scale_factors
        if (frames - 1) % time_scale:
            fixed = (frames - 1) // time_scale * time_scale + 1
            raise ValueError(f"num_frames={frames} must be {time_scale}k+1, e.g. {fixed} or {fixed + time_scale}")
        if height % height_scale or width % width_scale:
            raise ValueError(
                f"video size {height}x{width} (HxW) must be a multiple of {height_scale}x{width_scale}, "
                f"e.g. {max(1, height // height_scale) * height_scale}x{max(1, width // width_scale) * width_scale}"
            )

    def encode(self, video: mx.array) -> mx.array:
        """(B, C, F, H, W) pixels -> channels-last normalised latent (B, F', H', W', C')."""
        x = patchify(video.astype(self.conv_in.conv.weight.dtype), self.patch_size)
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = nn.silu(self.conv_norm_out(x))
        x = self.conv_out(x)
        # Means are the first latent_channels outputs in every log-variance layout; the
        # log-variance is not needed for the deterministic encode.
        means = x[..., : self.latent_channels]
        return self.per_channel_statistics.normalize(means, channel_axis=-1)

    def __call__(self, video: mx.array) -> mx.array:
        self.check_input(video)
        return self.encode(video).transpose(0, 4, 1, 2, 3)

    def tiled_encode(self, video: mx.array, tiling_config: TilingConfig | None = None) -> mx.array:
        """Encode tile by tile and blend the latents as ltx-core does (each tile's latents
        next to a seam are dropped; the rest are averaged where tiles overlap)."""
        self.check_input(video)
        batch, _, frames, height, width = video.shape
        time_scale, height_scale, width_scale = self.scale_factors
        latent_shape = (batch, (frames - 1) // time_scale + 1, height // height_scale, width // width_scale)
        dtype = self.conv_in.conv.weight.dtype
        latent = mx.zeros((*latent_shape, self.latent_channels), dtype=dtype)
        weights = mx.zeros((1, *latent_shape[1:], 1), dtype=dtype)
        pieces = OneAhead()
        for tile in prepare_tiles_for_encoding(video.shape, tiling_config, self.scale_factors):
            _, out_coords, mask = tile.channels_last()
            mask = mask.astype(dtype)
            encoded = self.encode(video[tile.in_coords])
            latent[out_coords] = latent[out_coords] + encoded * mask
            weights[(slice(None), *out_coords[1:])] = weights[(slice(None), *out_coords[1:])] + mask
            pieces.queue([latent, weights], wait_on=[encoded])
        return (latent / mx.maximum(weights, 1e-8)).transpose(0, 4, 1, 2, 3)


class VideoDecoder(nn.Module):
    """(B, 128, k+1, h, w) normalised latent -> (B, 3, 8k+1, 32h, 32w) pixels in about [-1, 1].

    With timestep conditioning, the latent is first blended with noise:
    latent·(1 - decode_noise_scale) + N(0, 1)·decode_noise_scale (set decode_noise_scale = 0
    for a deterministic decode), and `timestep` defaults to `decode_timestep`.
    """

    def __init__(self, config: VideoVAEConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.latent_channels = config.latent_channels
        self.causal = config.causal_decoder
        self.timestep_conditioning = config.timestep_conditioning
        self.scale_factors = config.decoder_scale_factors
        self.decode_noise_scale = 0.025
        self.decode_timestep = 0.05
        padding = config.decoder_spatial_padding_mode
        self.per_channel_statistics = PerChannelStatistics(config.latent_channels)
        # ltx-core sizes the first stage for three channel-halving upsamplers.
        channels = config.decoder_base_channels * 8
        self.conv_in = CausalConv3d(config.latent_channels, channels, 3, 1, padding)
        self.up_blocks = []
        for name, params in reversed(config.decoder_blocks):
            block, channels = _make_decoder_block(name, params, channels, config)
            self.up_blocks.append(block)
        self.conv_norm_out = make_norm(config.norm_layer, channels)
        self.conv_out = CausalConv3d(channels, config.out_channels * config.patch_size**2, 3, 1, padding)
        if config.timestep_conditioning:
            self.timestep_scale_multiplier = mx.array(1000.0)
            self.last_time_embedder = PixArtAlphaCombinedTimestepSizeEmbeddings(channels * 2)
            self.last_scale_shift_table = mx.zeros((2, channels))

    def _timestep(self, timestep, batch: int) -> mx.array | None:
        if not self.timestep_conditioning:
            return None
        if timestep is None:
            timestep = self.decode_timestep
        timestep = (timestep if isinstance(timestep, mx.array) else mx.array(timestep)).astype(mx.float32).reshape(-1)
        if timestep.size == 1:
            timestep = mx.broadcast_to(timestep, (batch,))
        if timestep.shape != (batch,):
            raise ValueError(f"timestep must be a number or have shape ({batch},), got {tuple(timestep.shape)}")
        return timestep

    def decode(self, latent: mx.array, timestep=None, key: mx.array | None = None) -> mx.array:
        """(B, C, F, H, W) normalised latent -> channels-last features before unpatchify."""
        batch = latent.shape[0]
        dtype = self.conv_in.conv.weight.dtype
        x = latent.astype(dtype).transpose(0, 2, 3, 4, 1)
        timestep = self._timestep(timestep, batch)
        if self.timestep_conditioning and self.decode_noise_scale > 0:
            noise = mx.random.normal(x.shape, dtype=dtype, key=key)
            x = noise * self.decode_noise_scale + (1.0 - self.decode_noise_scale) * x
        x = self.per_channel_statistics.un_normalize(x, channel_axis=-1)
        x = self.conv_in(x, causal=self.causal)
        scaled_timestep = None
        if self.timestep_conditioning:
            scaled_timestep = timestep * self.timestep_scale_multiplier.astype(mx.float32)
        for block in self.up_blocks:
            if isinstance(block, UNetMidBlock3D):
                x = block(x, causal=self.causal, timestep=scaled_timestep)
            else:
                x = block(x, causal=self.causal)
        x = self.conv_norm_out(x)
        if self.timestep_conditioning:
            embedded = self.last_time_embedder(scaled_timestep, x.dtype).reshape(batch, 2, -1)
            ada = self.last_scale_shift_table[None].astype(x.dtype) + embedded
            shift, scale = (ada[:, i].reshape(batch, 1, 1, 1, -1) for i in range(2))
            x = x * (1 + scale) + shift
        return self.conv_out(nn.silu(x), causal=self.causal)

    def __call__(self, latent: mx.array, timestep=None, key: mx.array | None = None) -> mx.array:
        _check_video_layout(latent, self.latent_channels, "latent", "(1, 128, 13, 16, 24)")
        return unpatchify(self.decode(latent, timestep, key), self.patch_size)

    def tiled_decode(
        self,
        latent: mx.array,
        tiling_config: TilingConfig | None = None,
        timestep=None,
        key: mx.array | None = None,
        decode_tiles: TileDecoding = decode_tiles_in_order,
    ) -> Iterator[mx.array]:
        """Decode tile by tile and yield (B, 3, T, H, W) chunks of consecutive frames.

        Tiles are blended as in ltx-core: trapezoidal masks in space and time, each chunk
        normalised by the summed masks. Only the current and the previous temporal chunk are
        held, so the whole video never has to fit in memory. `decode_tiles` runs the tiles
        (tile i with the i-th of `key`'s splits); the blending is the same whoever decodes them.
        """
        _check_video_layout(latent, self.latent_channels, "latent", "(1, 128, 13, 16, 24)")
        batch, _, _, latent_height, latent_width = latent.shape
        _, height_scale, width_scale = self.scale_factors
        height, width = latent_height * height_scale, latent_width * width_scale
        dtype = self.conv_in.conv.weight.dtype
        tiles = prepare_tiles_for_decoding(latent.shape, tiling_config, self.scale_factors)
        keys = mx.random.split(key, len(tiles)) if key is not None else None

        def decode_tile(index: int) -> mx.array:
            return self(latent[tiles[index].in_coords], timestep, keys[index] if keys is not None else None)

        decoded_tiles = decode_tiles(tiles, decode_tile)

        previous_chunk = previous_weights = previous_slice = None
        pieces = OneAhead()
        for group in group_tiles_by_temporal_slice(tiles):
            group_slice = group[0].out_coords[2]
            group_frames = group_slice.stop - group_slice.start
            chunk = mx.zeros((batch, group_frames, height, width, self.config.out_channels), dtype=dtype)
            weights = mx.zeros((1, group_frames, height, width, 1), dtype=dtype)
            for tile in group:
                _, out_coords, mask = tile.channels_last()
                decoded = next(decoded_tiles).transpose(0, 2, 3, 4, 1)
                offset = out_coords[1].start - group_slice.start
                length = min(out_coords[1].stop - out_coords[1].start, decoded.shape[1], group_frames - offset)
                mask = mask.astype(dtype)
                if mask.shape[1] > 1:
                    mask = mask[:, :length]
                region = (slice(None), slice(offset, offset + length), out_coords[2], out_coords[3])
                chunk[region] = chunk[region] + decoded[:, :length] * mask
                weights[region] = weights[region] + mask
                # Tile by tile (a whole chunk's tiles queued at once filled any memory limit).
                pieces.queue([chunk, weights], wait_on=[decoded])
            mx.eval(chunk, weights)

            if previous_chunk is not None:
                if previous_slice.stop > group_slice.start:
                    # Frames shared with the previous chunk: sum both chunks' weighted values
                    # and weights, so the shared frames are normalised once, over both.
                    overlap = previous_slice.stop - group_slice.start
                    shared = group_slice.start - previous_slice.start
                    previous_chunk[:, shared:] = previous_chunk[:, shared:] + chunk[:, :overlap]
                    previous_weights[:, shared:] = previous_weights[:, shared:] + weights[:, :overlap]
                    chunk[:, :overlap] = previous_chunk[:, shared:]
                    weights[:, :overlap] = previous_weights[:, shared:]
                ready = group_slice.start - previous_slice.start
                frames = previous_chunk[:, :ready] / mx.maximum(previous_weights[:, :ready], 1e-8)
                yield frames.transpose(0, 4, 1, 2, 3)
            previous_chunk, previous_weights, previous_slice = chunk, weights, group_slice

        if previous_chunk is not None:
            yield (previous_chunk / mx.maximum(previous_weights, 1e-8)).transpose(0, 4, 1, 2, 3)


class VideoVAE(nn.Module):
    """Encoder and/or decoder of one checkpoint, with their shared latent statistics."""

    def __init__(self, config: VideoVAEConfig, encoder: bool = True, decoder: bool = True):
        super().__init__()
        if not (encoder or decoder):
            raise ValueError("a VideoVAE needs an encoder, a decoder or both")
        self.config = config
        self.encoder = VideoEncoder(config) if encoder else None
        self.decoder = VideoDecoder(config) if decoder else None

    @property
    def per_channel_statistics(self) -> PerChannelStatistics:
        return (self.decoder or self.encoder).per_channel_statistics

    def _need(self, part: str):
        module = getattr(self, part)
        if module is None:
            raise ValueError(f"this VideoVAE was loaded without its {part}; load it with {part}=True")
        return module

    def encode(self, video: mx.array) -> mx.array:
        return self._need("encoder")(video)

    def decode(self, latent: mx.array, timestep=None, key: mx.array | None = None) -> mx.array:
        return self._need("decoder")(latent, timestep, key)

    def tiled_encode(self, video: mx.array, tiling: TilingConfig | None = None) -> mx.array:
        return self._need("encoder").tiled_encode(video, tiling)

    def tiled_decode(
        self, latent: mx.array, tiling: TilingConfig | None = None, timestep=None, key: mx.array | None = None
    ) -> Iterator[mx.array]:
        return self._need("decoder").tiled_decode(latent, tiling, timestep, key)


def decode_video(
    latent: mx.array,
    video_decoder: VideoDecoder,
    tiling_config: TilingConfig | None = None,
    key: mx.array | None = None,
    decode_tiles: TileDecoding = decode_tiles_in_order,
) -> Iterator[mx.array]:
    """Decode (B=1) latents to uint8 frames (F, H, W, 3), chunk by chunk when tiled (the tiles
    run by `decode_tiles`)."""

    def to_uint8(frames: mx.array) -> mx.array:
        frames = (mx.clip((frames.astype(mx.float32) + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(mx.uint8)
        return frames[0].transpose(1, 2, 3, 0)

    if tiling_config is not None:
        for frames in video_decoder.tiled_decode(latent, tiling_config, key=key, decode_tiles=decode_tiles):
            yield to_uint8(frames)
    else:
        yield to_uint8(video_decoder(latent, key=key))

"""Parity of the MLX video VAE with ltx-core's VideoEncoder / VideoDecoder.

Tiny seeded reference models keep the real 8× temporal / 32× spatial compression with few
channels; they are saved as official single-file checkpoints (`vae.encoder.*`,
`vae.decoder.*`, `vae.per_channel_statistics.*`, config in the metadata) and loaded through
`load_video_vae`.
"""

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.model.video_vae import SpatialTilingConfig as RefSpatialTilingConfig
from ltx_core.model.video_vae import TemporalTilingConfig as RefTemporalTilingConfig
from ltx_core.model.video_vae import TilingConfig as RefTilingConfig
from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
from reference import assert_cosine, assert_matches, save_checkpoint, seed_module_, to_mx

from LTX_2_MLX.loader import CheckpointError, load_video_vae
from LTX_2_MLX.model.common import cuda_kernels
from LTX_2_MLX.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
from LTX_2_MLX.model.video_vae.sampling import group_mean

LATENT_CHANNELS = 8


def tiny_config(padding: str, timestep_conditioning: bool = True, causal_decoder: bool = False) -> dict:
    """The real block layout (patch 4, space/time/all/all compression) with 1 layer per
    res_x and channels 8 → 64 (encoder), 32 → 4 (decoder)."""
    res = ["res_x", {"num_layers": 1}]
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    return {
        "dims": 3,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": LATENT_CHANNELS,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        "causal_decoder": causal_decoder,
        "timestep_conditioning": timestep_conditioning,
        "decoder_base_channels": 4,
        "spatial_padding_mode": padding,
        "encoder_blocks": [
            res,
            ["compress_space_res", {"multiplier": 2}],
            res,
            ["compress_time_res", {"multiplier": 2}],
            res,
            ["compress_all_res", {"multiplier": 2}],
            res,
            ["compress_all_res", {"multiplier": 1}],
            res,
        ],
        "decoder_blocks": [res, up, res, up, res, up, res],
    }


def variant_config() -> dict:
    """The other block kinds (strided convolutions, res_x_y, upsamplers without residual),
    group norm, per-channel log-variance and a causal decoder, still 8×/32×."""
    return {
        "latent_channels": 32,
        "patch_size": 4,
        "norm_layer": "group_norm",
        "latent_log_var": "per_channel",
        "causal_decoder": True,
        "timestep_conditioning": False,
        "decoder_base_channels": 8,
        "spatial_padding_mode": "replicate",
        "encoder_blocks": [
            ["res_x_y", {"multiplier": 2}],
            ["compress_space", {}],
            ["compress_time", {}],
            ["compress_all_x_y", {"multiplier": 1}],
            ["res_x", 1],
            ["compress_all", {}],
        ],
        "decoder_blocks": [
            ["res_x_y", {"multiplier": 2}],
            ["compress_space", {}],
            ["compress_time", {}],
            ["compress_all", {"multiplier": 1}],
            ["res_x", 1],
            ["compress_all", {"multiplier": 1}],
        ],
    }


class Reference:
    """A seeded ltx-core encoder/decoder pair and the official-layout checkpoint made from it."""

    def __init__(self, tmp_path_factory, config: dict, seed: int):
        self.config = config
        full = {"vae": config}
        self.encoder = seed_module_(VideoEncoderConfigurator.from_config(full), seed)
        self.decoder = seed_module_(VideoDecoderConfigurator.from_config(full), seed + 1)
        self.decoder.decode_noise_scale = 0.0
        gen = torch.Generator().manual_seed(seed + 2)
        statistics = {
            "std-of-means": torch.rand(config["latent_channels"], generator=gen) + 0.5,
            "mean-of-means": torch.randn(config["latent_channels"], generator=gen) * 0.3,
        }
        for module in (self.encoder, self.decoder):
            for name, value in statistics.items():
                module.per_channel_statistics.get_buffer(name).copy_(value)
        if config.get("timestep_conditioning", True):
            self.decoder.timestep_scale_multiplier.data.fill_(1000.0)
        tensors = {}
        for part, module in (("encoder", self.encoder), ("decoder", self.decoder)):
            for key, value in module.state_dict().items():
                if not key.startswith("per_channel_statistics."):
                    tensors[f"vae.{part}.{key}"] = value
        for name, value in statistics.items():
            tensors[f"vae.per_channel_statistics.{name}"] = value
        # Further statistics that official files may carry and ltx-core ignores.
        tensors["vae.per_channel_statistics.mean-of-stds"] = torch.ones(config["latent_channels"])
        self.tensors = tensors
        self.path = save_checkpoint(tmp_path_factory.mktemp("vae") / "vae.safetensors", tensors, full)
        self._loaded = {}

    def load(self, dtype=mx.float32):
        if dtype not in self._loaded:
            vae = load_video_vae(self.path, dtype=dtype)
            vae.decoder.decode_noise_scale = 0.0
            self._loaded[dtype] = vae
        return self._loaded[dtype]


@pytest.fixture(scope="module", params=["zeros", "reflect"])
def reference(request, tmp_path_factory):
    return Reference(tmp_path_factory, tiny_config(request.param), seed=10)


@pytest.fixture(scope="module")
def reference_without_timestep(tmp_path_factory):
    return Reference(tmp_path_factory, tiny_config("reflect", timestep_conditioning=False), seed=20)


def video(frames: int, height: int = 64, width: int = 96, batch: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, height, width, generator=gen) * 2 - 1


def latent(
    frames: int, height: int = 2, width: int = 3, batch: int = 1, channels: int = LATENT_CHANNELS, seed: int = 1
):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, frames, height, width, generator=gen)


@pytest.mark.parametrize("frames", [9, 17])
def test_encoder_matches_reference_fp32(reference, frames):
    pixels = video(frames)
    expected = reference.encoder(pixels)
    actual = reference.load().encoder(to_mx(pixels))
    assert actual.shape == (1, LATENT_CHANNELS, (frames - 1) // 8 + 1, 2, 3)
    assert_matches(f"encoder {reference.config['spatial_padding_mode']} {frames} frames", actual, expected)


@pytest.mark.parametrize("group", [1, 2, 4])
def test_space_to_depth_skip_group_mean_equals_the_reshaped_mean(group):
    """The encoder's downsampling skip averages runs of `group` channels as ltx-core's
    reshape-then-mean does, in float32 and bfloat16."""
    for dtype in (mx.float32, mx.bfloat16):
        x = mx.random.normal((1, 3, 4, 5, 6 * group), key=mx.random.key(group)).astype(dtype)
        expected = x.reshape(1, 3, 4, 5, 6, group).astype(mx.float32).mean(axis=-1).astype(dtype)
        assert mx.array_equal(group_mean(x, group), expected)


@pytest.mark.parametrize("timestep", [None, [0.2, 0.7]])
def test_decoder_matches_reference_fp32(reference, timestep):
    latents = latent(3, batch=2)
    ref_timestep = None if timestep is None else torch.tensor(timestep)
    expected = reference.decoder(latents, timestep=ref_timestep)
    actual = reference.load().decoder(to_mx(latents), timestep=None if timestep is None else mx.array(timestep))
    assert actual.shape == (2, 3, 17, 64, 96)
    label = "default timestep" if timestep is None else "timestep per sample"
    assert_matches(f"decoder {reference.config['spatial_padding_mode']} {label}", actual, expected)


def test_decoder_without_timestep_conditioning_matches_reference_fp32(reference_without_timestep):
    latents = latent(2)
    expected = reference_without_timestep.decoder(latents)
    actual = reference_without_timestep.load().decoder(to_mx(latents))
    assert_matches("decoder without timestep conditioning", actual, expected)


def test_other_block_kinds_match_reference_fp32(tmp_path_factory):
    ref = Reference(tmp_path_factory, variant_config(), seed=30)
    pixels = video(9, 64, 32)
    vae = ref.load()
    assert_matches("encoder strided/res_x_y/group_norm", vae.encoder(to_mx(pixels)), ref.encoder(pixels))
    latents = latent(2, 2, 1, channels=32)
    assert_matches("decoder causal/res_x_y/group_norm", vae.decoder(to_mx(latents)), ref.decoder(latents))


def test_tiled_encode_matches_reference_tiled_fp32(reference):
    pixels = video(33, 128, 160, seed=3)
    ours = TilingConfig(SpatialTilingConfig(96, 64), TemporalTilingConfig(24, 16))
    theirs = RefTilingConfig(RefSpatialTilingConfig(96, 64), RefTemporalTilingConfig(24, 16))
    expected = reference.encoder.tiled_encode(pixels, theirs)
    actual = reference.load().tiled_encode(to_mx(pixels), ours)
    assert actual.shape == (1, LATENT_CHANNELS, 5, 4, 5)
    assert_matches(f"tiled encode {reference.config['spatial_padding_mode']}", actual, expected)


def test_tiled_decode_matches_reference_tiled_fp32(reference):
    latents = latent(7, 4, 5, seed=4)
    ours = TilingConfig(SpatialTilingConfig(96, 32), TemporalTilingConfig(24, 8))
    theirs = RefTilingConfig(RefSpatialTilingConfig(96, 32), RefTemporalTilingConfig(24, 8))
    expected = list(reference.decoder.tiled_decode(latents, theirs, timestep=torch.tensor([0.3])))
    chunks = list(reference.load().tiled_decode(to_mx(latents), ours, timestep=0.3))
    assert [c.shape for c in chunks] == [tuple(e.shape) for e in expected]
    assert len(chunks) > 1, "the test should exercise the blending of several temporal chunks"
    actual = mx.concatenate(chunks, axis=2)
    assert_matches(f"tiled decode {reference.config['spatial_padding_mode']}", actual, torch.cat(expected, dim=2))


def test_bf16_matches_reference(reference):
    vae = reference.load(mx.bfloat16)
    pixels = video(17, seed=5)
    encoded = vae.encoder(to_mx(pixels))
    assert encoded.dtype == mx.bfloat16
    assert_cosine(f"encoder bf16 {reference.config['spatial_padding_mode']}", encoded, reference.encoder(pixels))
    latents = latent(3, seed=6)
    decoded = vae.decoder(to_mx(latents))
    assert_cosine(f"decoder bf16 {reference.config['spatial_padding_mode']}", decoded, reference.decoder(latents))


def test_per_channel_statistics_match_reference(reference):
    latents = latent(2, seed=7)
    statistics = reference.load().per_channel_statistics
    expected = reference.decoder.per_channel_statistics
    mode = reference.config["spatial_padding_mode"]
    assert_matches(f"normalize {mode}", statistics.normalize(to_mx(latents)), expected.normalize(latents))
    assert_matches(f"un_normalize {mode}", statistics.un_normalize(to_mx(latents)), expected.un_normalize(latents))


def test_decode_noise_blends_latent_with_seeded_noise(reference):
    vae = reference.load()
    decoder = vae.decoder
    latents = to_mx(latent(2, seed=8))
    key = mx.random.key(5)
    noise = mx.random.normal(latents.transpose(0, 2, 3, 4, 1).shape, key=key).transpose(0, 4, 1, 2, 3)
    decoder.decode_noise_scale = 0.025
    try:
        noisy = decoder(latents, key=key)
        again = decoder(latents, key=key)
    finally:
        decoder.decode_noise_scale = 0.0
    blended = decoder(latents * 0.975 + noise * 0.025)
    assert np.array_equal(np.array(noisy), np.array(again))
    assert_matches(f"decode noise = blended latent {reference.config['spatial_padding_mode']}", noisy, blended)


def test_load_refuses_missing_weights(reference, tmp_path):
    tensors = {k: v for k, v in reference.tensors.items() if not k.endswith("conv_out.conv.bias")}
    path = save_checkpoint(tmp_path / "broken.safetensors", tensors, {"vae": reference.config})
    with pytest.raises(CheckpointError, match="missing: .*conv_out.conv.bias"):
        load_video_vae(path)
    tensors = {k: v for k, v in reference.tensors.items() if "std-of-means" not in k}
    path = save_checkpoint(tmp_path / "no_stats.safetensors", tensors, {"vae": reference.config})
    with pytest.raises(CheckpointError, match="std_of_means"):
        load_video_vae(path)


def test_load_accepts_statistics_under_each_part(reference, tmp_path):
    """ltx-core also reads `vae.<part>.per_channel_statistics.*`; and a decoder-only load."""
    tensors = {}
    for key, value in reference.tensors.items():
        if key.startswith("vae.per_channel_statistics."):
            name = key.rsplit(".", 1)[1]
            tensors[f"vae.encoder.per_channel_statistics.{name}"] = value.clone()
            tensors[f"vae.decoder.per_channel_statistics.{name}"] = value
        else:
            tensors[key] = value
    path = save_checkpoint(tmp_path / "per_part.safetensors", tensors, {"vae": reference.config})
    expected = reference.load().per_channel_statistics.std_of_means
    assert np.array_equal(np.array(load_video_vae(path).encoder.per_channel_statistics.std_of_means), expected)
    decoder_only = load_video_vae(reference.path, encoder=False)
    assert decoder_only.encoder is None
    with pytest.raises(ValueError, match="encoder=True"):
        decoder_only.tiled_encode(mx.zeros((1, 3, 9, 64, 64)))


def test_bad_inputs_are_refused_with_a_fix(reference):
    vae = reference.load()
    with pytest.raises(ValueError, match=r"num_frames=12 must be 8k\+1, e.g. 9 or 17"):
        vae.encoder(mx.zeros((1, 3, 12, 64, 64)))
    with pytest.raises(ValueError, match="multiple of 32x32"):
        vae.encoder(mx.zeros((1, 3, 9, 48, 64)))
    with pytest.raises(ValueError, match="latent must be"):
        vae.decoder(mx.zeros((1, 4, 2, 2, 2)))
    with pytest.raises(ValueError, match="tile_size_in_frames=20"):
        TemporalTilingConfig(20, 8)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("stride,causal", [((1, 1, 1), True), ((1, 1, 1), False), ((2, 2, 2), True), ((2, 1, 1), True)])
def test_conv3d_formulations_match_torch(padding_mode, stride, causal):
    """Both evaluations of the causal convolution (per-frame 2D, used on Metal and the CPU;
    native 3D, used on CUDA) against ltx-core's CausalConv3d, on batch 2."""
    from ltx_core.model.video_vae.convolution import CausalConv3d as RefCausalConv3d
    from ltx_core.model.video_vae.enums import PaddingModeType

    from LTX_2_MLX.model.video_vae.convolution import conv3d_by_frames, conv3d_native, torch_conv_weight_to_mlx

    ref = RefCausalConv3d(6, 5, 3, stride=stride, spatial_padding_mode=PaddingModeType(padding_mode))
    seed_module_(ref, 40)
    x = torch.randn(2, 6, 7, 8, 10, generator=torch.Generator().manual_seed(41))
    expected = ref(x, causal=causal)
    x_mlx = to_mx(x).transpose(0, 2, 3, 4, 1)
    weight, bias = torch_conv_weight_to_mlx(to_mx(ref.conv.weight)), to_mx(ref.conv.bias)
    for name, formulation in (("by frames", conv3d_by_frames), ("native", conv3d_native)):
        actual = formulation(x_mlx, weight, bias, stride, padding_mode, causal).transpose(0, 4, 1, 2, 3)
        tag = f"conv3d {name} {padding_mode} stride {stride} {'causal' if causal else 'symmetric'}"
        assert_matches(tag, actual, expected)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_spatial_padding_equals_torch_in_one_copy_per_axis(mode):
    """Wider than a 3x3 kernel needs, both axes, on (N, H, W, C); the graph has one
    concatenation per padded axis and no zero fill or in-place strip updates."""
    import io
    import re

    from LTX_2_MLX.model.video_vae.convolution import pad_spatial

    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(5))
    for pad in [(1, 1), (2, 3), (0, 2), (4, 0)]:
        expected = torch.nn.functional.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode=mode)
        padded = pad_spatial(to_mx(x).transpose(0, 2, 3, 1), pad, mode)
        dot = io.StringIO()
        mx.export_to_dot(dot, padded)  # before evaluation: the graph that computes it
        operations = re.findall(r'label ="([^"]+)"', dot.getvalue())
        assert operations.count("Concatenate") == sum(1 for width in pad if width), operations
        assert not {"Full", "SliceUpdate"} & set(operations), operations
        assert np.array_equal(np.array(padded.transpose(0, 3, 1, 2)), expected.numpy()), pad
    if mode == "reflect":  # as torch, which refuses a reflection as wide as the axis
        with pytest.raises(ValueError, match="reflect padding of 6 needs more than 6"):
            pad_spatial(to_mx(x).transpose(0, 2, 3, 1), (6, 0), mode)  # H is 6


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros"])
@pytest.mark.parametrize("dtype,channels", [(mx.bfloat16, 8), (mx.bfloat16, 24), (mx.float32, 4)])
def test_padding_kernel_equals_the_portable_padding(host_kernels, mode, dtype, channels):
    from LTX_2_MLX.model.video_vae.convolution import pad_spatial, pad_temporal, temporal_padding
    from LTX_2_MLX.model.video_vae.pad_kernel import pad_video

    mx.random.seed(7)
    x = mx.random.normal((2, 4, 5, 6, channels)).astype(dtype)
    for kernel_frames, causal, spatial in [
        (3, True, (1, 1)),
        (3, False, (1, 1)),
        (1, True, (2, 3)),
        (5, False, (0, 2)),
    ]:
        padded = pad_video(x, temporal_padding(kernel_frames, causal), spatial, mode)
        expected = pad_temporal(x, kernel_frames, causal)
        b, f = expected.shape[:2]
        expected = pad_spatial(expected.reshape(b * f, *expected.shape[2:]), spatial, mode)
        assert mx.array_equal(padded, expected.reshape(b, f, *expected.shape[1:])), (kernel_frames, causal, spatial)
    assert len(host_kernels.launches) == 4


def test_decoder_convolution_through_the_padding_kernel_equals_the_portable_one(host_kernels):
    from LTX_2_MLX.model.video_vae.convolution import conv3d_native

    mx.random.seed(8)
    x = mx.random.normal((1, 5, 6, 7, 8))
    weight, bias = 0.1 * mx.random.normal((4, 3, 3, 3, 8)), mx.random.normal((4,))
    fused = conv3d_native(x, weight, bias, (1, 1, 1), "reflect", False)
    assert len(host_kernels.launches) == 1
    with pytest.MonkeyPatch.context() as portable:
        portable.setattr(cuda_kernels, "enabled", lambda: False)
        assert mx.array_equal(fused, conv3d_native(x, weight, bias, (1, 1, 1), "reflect", False))


def test_padding_the_kernel_does_not_cover_takes_the_portable_path(host_kernels):
    from LTX_2_MLX.model.video_vae.pad_kernel import pad_video

    x = mx.zeros((1, 2, 3, 3, 6), mx.bfloat16)  # 12-byte channel rows
    assert pad_video(x, (2, 0), (1, 1), "reflect") is None
    assert pad_video(mx.zeros((1, 2, 3, 3, 8), mx.bfloat16), (2, 0), (3, 1), "reflect") is None  # wider than H
    assert host_kernels.launches == []


def test_decode_video_matches_reference_uint8(reference):
    """The streamed uint8 frames of `decode_video` (tiled) against ltx-core's."""
    from ltx_core.model.video_vae import decode_video as ref_decode_video

    from LTX_2_MLX.model.video_vae import decode_video

    latents = latent(7, 4, 5, seed=9)
    ours = TilingConfig(SpatialTilingConfig(96, 32), TemporalTilingConfig(24, 8))
    theirs = RefTilingConfig(RefSpatialTilingConfig(96, 32), RefTemporalTilingConfig(24, 8))
    expected = torch.cat(list(ref_decode_video(latents, reference.decoder, theirs)), dim=0).numpy()
    actual = np.concatenate([np.array(f) for f in decode_video(to_mx(latents), reference.load().decoder, ours)])
    assert actual.dtype == np.uint8 and actual.shape == expected.shape == (49, 128, 160, 3)
    # Rounding to 8 bits can flip a level where the float values differ by ~1e-6.
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1


def _peak(run) -> int:
    """MLX's peak memory while `run()` runs, above what was live before."""
    mx.synchronize()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    run()
    return mx.get_peak_memory() - base


def test_tiled_decode_holds_about_two_tiles_at_once():
    """Tiles are queued one ahead of the one being waited for: a decode of nine tiles peaks
    near two tiles' activations, not a temporal chunk's (before, 3.5 tiles at this size)."""
    from LTX_2_MLX.model.video_vae import VideoDecoder, VideoVAEConfig

    mx.random.seed(0)
    decoder = VideoDecoder(VideoVAEConfig.from_dict({**tiny_config("zeros"), "decoder_base_channels": 8}))
    mx.eval(decoder.parameters())
    latents = mx.random.normal((1, LATENT_CHANNELS, 2, 8, 8))
    mx.eval(latents)

    one_tile = _peak(lambda: mx.eval(decoder(latents[..., :4, :4], 0.05)))
    tiling = TilingConfig(SpatialTilingConfig(128, 64), TemporalTilingConfig(16, 8))
    tiled = _peak(lambda: mx.eval(list(decoder.tiled_decode(latents, tiling, timestep=0.05))))
    assert tiled <= 2.5 * one_tile, (tiled, one_tile)


def test_tiled_encode_holds_about_two_tiles_at_once():
    """Encoding queues one tile ahead too: bounded at about two tiles, whatever their number."""
    from LTX_2_MLX.model.video_vae import VideoEncoder, VideoVAEConfig

    mx.random.seed(0)
    encoder = VideoEncoder(VideoVAEConfig.from_dict(tiny_config("zeros")))
    mx.eval(encoder.parameters())
    pixels = mx.random.uniform(-1, 1, (1, 3, 25, 160, 160))
    mx.eval(pixels)

    one_tile = _peak(lambda: mx.eval(encoder(pixels[:, :, :25, :96, :96])))
    tiling = TilingConfig(SpatialTilingConfig(96, 64), TemporalTilingConfig(24, 16))
    tiled = _peak(lambda: mx.eval(encoder.tiled_encode(pixels, tiling)))
    assert tiled <= 2.5 * one_tile, (tiled, one_tile)

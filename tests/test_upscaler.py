"""Parity of the MLX latent upsamplers with ltx-core's, every variant, loaded from
official-layout files by `load_upscaler`."""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
import torch
from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video
from ltx_core.model.upsampler.blur_downsample import BlurDownsample as ReferenceBlurDownsample
from ltx_core.model.video_vae.ops import PerChannelStatistics
from mlx.utils import tree_flatten
from reference import assert_cosine, assert_matches, save_checkpoint, seed_module_, to_mx

from LTX_2_MLX.loader import CheckpointError, load_upscaler
from LTX_2_MLX.model.upscaler import LatentUpsampler, LatentUpsamplerConfig, upsample_latent
from LTX_2_MLX.model.upscaler.blur_downsample import BlurDownsample

TINY = {"_class_name": "LatentUpsampler", "in_channels": 8, "mid_channels": 64, "num_blocks_per_stage": 2}

# name -> the flat config an official file of that kind carries (shrunk). Published temporal
# files say `"rational_resampler": true, "spatial_scale": 1.0`, which ltx-core ignores.
VARIANTS = {
    "spatial_x2": {"dims": 3, "spatial_upsample": True, "temporal_upsample": False},
    "spatial_x1.5_rational": {"dims": 3, "spatial_upsample": True, "rational_resampler": True, "spatial_scale": 1.5},
    "spatial_x2_rational": {"dims": 3, "spatial_upsample": True, "rational_resampler": True, "spatial_scale": 2.0},
    "spatial_x0.75_rational": {"dims": 3, "spatial_upsample": True, "rational_resampler": True, "spatial_scale": 0.75},
    "temporal_x2": {
        "dims": 3,
        "spatial_upsample": False,
        "temporal_upsample": True,
        "spatial_scale": 1.0,
        "rational_resampler": True,
    },
    "spatial_temporal_x2": {"dims": 3, "spatial_upsample": True, "temporal_upsample": True},
    "per_frame_2d_spatial_x2": {"dims": 2, "spatial_upsample": True, "temporal_upsample": False},
}

# (B, C, F, H, W); H != W and odd sizes catch axis mix-ups in the layout conversions.
LATENT_SHAPE = (2, 8, 3, 6, 5)


def _latent(seed: int) -> torch.Tensor:
    return torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


def _reference_upsampler(config: dict, seed: int):
    with torch.device("meta"):
        model = LatentUpsamplerConfigurator.from_config(config)
    return seed_module_(model, seed)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    name = request.param
    config = {**TINY, **VARIANTS[name]}
    seed = sorted(VARIANTS).index(name)
    reference = _reference_upsampler(config, seed)
    path = save_checkpoint(tmp_path_factory.mktemp("upscaler") / f"{name}.safetensors", reference.state_dict(), config)
    latent = _latent(100 + seed)
    return SimpleNamespace(name=name, path=path, reference=reference, latent=latent, expected=reference(latent))


def test_upscaler_matches_reference_fp32(variant):
    upscaler = load_upscaler(variant.path, dtype=mx.float32)
    actual = upscaler(to_mx(variant.latent))
    assert actual.dtype == mx.float32
    assert_matches(f"upscaler {variant.name} fp32", actual, variant.expected)


def test_upscaler_matches_reference_bf16(variant):
    upscaler = load_upscaler(variant.path, dtype=mx.bfloat16)
    actual = upscaler(to_mx(variant.latent, mx.bfloat16))
    assert actual.dtype == mx.bfloat16
    assert_cosine(f"upscaler {variant.name} bf16", actual, variant.expected)


def test_upscaler_output_shapes(variant):
    b, c, f, h, w = LATENT_SHAPE
    expected = {
        "spatial_x2": (b, c, f, 2 * h, 2 * w),
        "per_frame_2d_spatial_x2": (b, c, f, 2 * h, 2 * w),
        "spatial_x2_rational": (b, c, f, 2 * h, 2 * w),
        # up ×3, then a stride-2 (or 4) blur with padding 2: ceil(3h / 2), ceil(3h / 4)
        "spatial_x1.5_rational": (b, c, f, 9, 8),
        "spatial_x0.75_rational": (b, c, f, 5, 4),
        "temporal_x2": (b, c, 2 * f - 1, h, w),
        "spatial_temporal_x2": (b, c, 2 * f - 1, 2 * h, 2 * w),
    }[variant.name]
    assert tuple(variant.expected.shape) == expected
    assert tuple(load_upscaler(variant.path)(to_mx(variant.latent)).shape) == expected


class MlxPerChannelStatistics:
    """The video VAE's latent statistics, with ltx-core's PerChannelStatistics math."""

    def __init__(self, std_of_means: mx.array, mean_of_means: mx.array):
        self.std_of_means = std_of_means.reshape(1, -1, 1, 1, 1)
        self.mean_of_means = mean_of_means.reshape(1, -1, 1, 1, 1)

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self.std_of_means.astype(x.dtype) + self.mean_of_means.astype(x.dtype)

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self.mean_of_means.astype(x.dtype)) / self.std_of_means.astype(x.dtype)


@pytest.fixture(scope="module")
def statistics():
    gen = torch.Generator().manual_seed(7)
    reference = PerChannelStatistics(latent_channels=TINY["in_channels"])
    with torch.no_grad():
        reference.get_buffer("std-of-means").copy_(0.5 + torch.rand(TINY["in_channels"], generator=gen))
        reference.get_buffer("mean-of-means").copy_(torch.randn(TINY["in_channels"], generator=gen))
    ours = MlxPerChannelStatistics(
        to_mx(reference.get_buffer("std-of-means")), to_mx(reference.get_buffer("mean-of-means"))
    )
    return reference, ours


@pytest.mark.parametrize("name", ["spatial_x2", "temporal_x2"])
def test_upsample_latent_matches_upsample_video(name, statistics, tmp_path):
    reference_statistics, our_statistics = statistics
    config = {**TINY, **VARIANTS[name]}
    reference = _reference_upsampler(config, seed=11)
    path = save_checkpoint(tmp_path / "upscaler.safetensors", reference.state_dict(), config)
    latent = _latent(12)
    encoder = SimpleNamespace(per_channel_statistics=reference_statistics)
    expected = upsample_video(latent, video_encoder=encoder, upsampler=reference)

    upscaler = load_upscaler(path, dtype=mx.float32)
    assert_matches(f"upsample_latent {name} fp32", upsample_latent(to_mx(latent), upscaler, our_statistics), expected)
    upscaler = load_upscaler(path, dtype=mx.bfloat16)
    actual = upsample_latent(to_mx(latent, mx.bfloat16), upscaler, our_statistics)
    assert_cosine(f"upsample_latent {name} bf16", actual, expected)


def test_blur_kernel_default_is_reference_binomial():
    reference = ReferenceBlurDownsample(dims=2, stride=2).kernel  # (1, 1, 5, 5)
    ours = BlurDownsample(stride=2).kernel  # (1, 5, 5, 1)
    np.testing.assert_allclose(np.array(ours[0, :, :, 0]), reference[0, 0].numpy(), rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def spatial_tensors():
    config = {**TINY, **VARIANTS["spatial_x1.5_rational"]}
    return config, _reference_upsampler(config, seed=21).state_dict()


def test_load_upscaler_refuses_missing_and_unexpected_keys(spatial_tensors, tmp_path):
    config, tensors = spatial_tensors
    missing = {k: v for k, v in tensors.items() if k != "upsampler.blur_down.kernel"}
    with pytest.raises(CheckpointError, match=r"missing: upsampler\.blur_down\.kernel"):
        load_upscaler(save_checkpoint(tmp_path / "missing.safetensors", missing, config))
    unexpected = {**tensors, "upsampler.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected: upsampler\.extra\.weight"):
        load_upscaler(save_checkpoint(tmp_path / "unexpected.safetensors", unexpected, config))


def test_load_upscaler_refuses_weights_of_another_variant(spatial_tensors, tmp_path):
    config, tensors = spatial_tensors
    temporal_config = {**TINY, **VARIANTS["temporal_x2"]}
    with pytest.raises(CheckpointError, match=r"wrong shape: upsampler\.conv\.bias .*upsampler\.conv\.weight"):
        load_upscaler(save_checkpoint(tmp_path / "mixed.safetensors", tensors, temporal_config))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no 'config' in the safetensors metadata"),
        ({"transformer": {}, "vae": {}}, "none of the latent upsampler's keys"),
        ({**TINY, "rational_resampler": True, "spatial_scale": 3.0}, r"spatial_scale=3.0 has no rational resampler"),
        ({**TINY, "spatial_upsample": False}, "set at least one to true"),
        ({**TINY, "dims": 2, "temporal_upsample": True}, "dims=2 .* support only spatial"),
        ({**TINY, "mid_channels": 48}, "mid_channels=48 must be a multiple of 32"),
    ],
)
def test_load_upscaler_explains_unusable_config(config, message, spatial_tensors, tmp_path):
    _, tensors = spatial_tensors
    with pytest.raises(CheckpointError, match=message):
        load_upscaler(save_checkpoint(tmp_path / "bad.safetensors", tensors, config))


def test_upscaler_rejects_latent_with_wrong_channels(spatial_tensors, tmp_path):
    config, tensors = spatial_tensors
    upscaler = load_upscaler(save_checkpoint(tmp_path / "ok.safetensors", tensors, config))
    with pytest.raises(ValueError, match=r"expected \(B, 8, F, H, W\)"):
        upscaler(mx.zeros((1, 4, 2, 3, 3)))



@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_full_size_upscaler_takes_reference_state_dict(name):
    """At the published sizes (128 latent channels, 4 blocks a stage; 512 and 1024 wide), every
    ltx-core tensor maps onto exactly one parameter of ours of the right shape. Nothing is
    evaluated: both models stay lazy / on the meta device."""
    for mid_channels in (512, 1024):
        config = {**VARIANTS[name], "in_channels": 128, "mid_channels": mid_channels, "num_blocks_per_stage": 4}
        with torch.device("meta"):
            reference = LatentUpsamplerConfigurator.from_config(config)
        checkpoint = {k: mx.zeros(tuple(v.shape)) for k, v in reference.state_dict().items()}
        converted = {k: tuple(v.shape) for k, v in LatentUpsampler.sanitize(checkpoint).items()}
        ours = LatentUpsampler(LatentUpsamplerConfig.from_dict(config))
        assert converted == {k: tuple(v.shape) for k, v in tree_flatten(ours.parameters())}

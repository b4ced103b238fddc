"""IC-LoRA's conditioning attention mask and skip_stage_2 against ltx-pipelines' ICLoraPipeline,
end to end on the tiny complete checkpoint (as test_pipeline_parity runs the ic-lora kind).

- The mask: a grayscale video whose frames weight how strongly the generated tokens attend to
  the reference video's tokens, times a strength. The reference's `main()` loads it at stage
  1's size in bfloat16 (`_load_mask_video`) and hands the tensor to `__call__`; our pipeline is
  given the file. The mask goes through bfloat16 on both sides however the pipeline computes,
  so its rounding must be the reference's to the last bit: the downsampled weights are
  compared bit for bit, and the final and stage-1 latents in float32 and bfloat16.
- skip_stage_2: the half-size stage-1 latents are what gets decoded (both sides), and the CLI
  writes a half-size video.
"""

import imageio_ffmpeg
import mlx.core as mx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pipeline_harness import (
    capturing_stage_1,
    drawing_noiser,
    frames_as_we_decode_them,
    run_reference_in_float32,
    use_tiny_text_encoder,
)
from reference import assert_cosine, assert_matches, relative_error, to_mx
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.cli import main
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import base, ic_lora
from LTX_2_MLX.pipelines.media_io import write_video
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import ImageConditioningInput

PROMPT, FRAMES, FPS, SIZE = "a red fox runs", 17, 24.0, 128
LORA_STRENGTH, MASK_STRENGTH = 0.6, 0.7


@pytest.fixture(scope="module")
def reference_video(tmp_path_factory):
    """The video the IC-LoRA follows: 17 frames of 80x96 (resized and cropped to stage 1's 64x64)."""
    path = tmp_path_factory.mktemp("ic-lora-mask") / "depth.mp4"
    y, x = np.mgrid[0:80, 0:96]
    frames = np.stack([(np.stack([x * 2 + 9 * f, y * 3, (x + y + 5 * f)], -1) % 256) for f in range(FRAMES)])
    write_video(path, [frames.astype(np.uint8)], FPS)
    return str(path)


@pytest.fixture(scope="module")
def mask_video(tmp_path_factory):
    """A gray mask video: the left half white, the right half dark and brightening frame by
    frame, a mid-gray band along the bottom, and a soft diagonal ramp so most values are not
    exact in bfloat16."""
    path = tmp_path_factory.mktemp("ic-lora-mask") / "mask.mp4"
    y, x = np.mgrid[0:80, 0:96]
    frames = []
    for f in range(FRAMES):
        gray = np.where(x < 48, 255, 20 + 11 * f + (x + y) // 4)
        gray = np.where(y >= 64, 128 + 4 * f, gray)
        frames.append(np.repeat(np.clip(gray, 0, 255)[..., None], 3, -1))
    write_video(path, [np.stack(frames).astype(np.uint8)], FPS)
    return str(path)


def _reference_run(model_files, monkeypatch, video_path, mask_path, skip_stage_2):
    """The reference's decoded (video, audio) latents, its stage-1 latents and the noise it drew,
    the mask loaded as its `main()` loads it: at stage 1's size, in bfloat16."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_pipelines import ic_lora as reference
    from ltx_pipelines.utils import media_io
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage

    checkpoint, gemma, image, upscaler, lora = map(str, model_files[:5])
    captured, noises, generator = {}, [], torch.Generator().manual_seed(123)

    monkeypatch.setattr(media_io, "decode_video_from_file", frames_as_we_decode_them)
    # Before the module's torch is made float32: the reference builds the mask in bfloat16.
    mask = reference._load_mask_video(mask_path, height=SIZE // 2, width=SIZE // 2, num_frames=FRAMES)
    assert mask.dtype == torch.bfloat16
    original_denoise = reference.denoise_audio_video
    run_reference_in_float32(monkeypatch, reference)
    monkeypatch.setattr(reference, "GaussianNoiser", drawing_noiser(generator, noises))
    monkeypatch.setattr(reference, "denoise_audio_video", capturing_stage_1(original_denoise, captured))
    monkeypatch.setattr(reference, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    monkeypatch.setattr(reference, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    loras = [LoraPathStrengthAndSDOps(lora, LORA_STRENGTH, LTXV_LORA_COMFY_RENAMING_MAP)]
    pipeline = reference.ICLoraPipeline(checkpoint, upscaler, gemma, loras=loras, device=torch.device("cpu"))
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    use_tiny_text_encoder(pipeline.stage_1_model_ledger, gemma)
    with torch.no_grad():
        pipeline(prompt=PROMPT, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
                 images=[RefImage(image, 0, 1.0, crf=0)], video_conditioning=[(video_path, 1.0)],
                 conditioning_attention_strength=MASK_STRENGTH, conditioning_attention_mask=mask,
                 skip_stage_2=skip_stage_2)  # fmt: skip
    return (captured["video"], captured["audio"]), captured["stage 1"], noises


def _our_run(model_files, monkeypatch, noises, dtype, video_path, mask_path, skip_stage_2):
    """Our decoded (video, audio) latents and stage-1 latents, from the reference's noise."""
    captured = {}

    def capture(ledger, video, audio, *args):
        captured.update(video=video, audio=audio)

    original_denoise = ic_lora.denoise_stage
    monkeypatch.setattr(ic_lora, "denoise_stage", capturing_stage_1(original_denoise, captured))
    monkeypatch.setattr(base, "decode_outputs", capture)
    checkpoint, gemma, image, upscaler, lora = model_files[:5]
    ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler,
                         loras=[(str(lora), LORA_STRENGTH)])  # fmt: skip
    mask = None if mask_path is None else (mask_path, MASK_STRENGTH)
    ic_lora.ICLoraPipeline(ledger)(
        prompt=PROMPT, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
        images=[ImageConditioningInput(str(image), 0, 1.0, crf=0)], video_conditioning=[(video_path, 1.0)],
        conditioning_attention_mask=mask, skip_stage_2=skip_stage_2,
        noiser=InjectedNoiser([to_mx(noise, dtype) for noise in noises]),
    )  # fmt: skip
    return (captured["video"], captured["audio"]), captured["stage 1"]


def _compare(dtype, what, latents, reference_latents):
    """fp32: max|Δ| <= 1e-4·max|ref|; bf16: cosine >= 0.999."""
    for stream, latent, reference in zip(("video", "audio"), latents, reference_latents):
        name = f"ic-lora+mask{' bf16' if dtype == mx.bfloat16 else ''} vs ltx-pipelines fp32: {what} {stream} latent"
        if dtype == mx.float32:
            assert_matches(name, latent, reference, tol=1e-4)
        else:
            assert_cosine(name, latent, reference)


def test_masked_ic_lora_matches_ltx_pipelines(model_files, monkeypatch, reference_video, mask_video):
    """Both stages with the mask: the final latents, and stage 1's, where the mask acts."""
    reference_final, reference_stage_1, noises = _reference_run(
        model_files, monkeypatch, reference_video, mask_video, skip_stage_2=False
    )
    assert len(noises) == 4  # video and audio, per stage
    for dtype in (mx.float32, mx.bfloat16):
        final, stage_1 = _our_run(model_files, monkeypatch, noises, dtype, reference_video, mask_video, False)
        _compare(dtype, "final", final, reference_final)
        _compare(dtype, "stage-1", stage_1, reference_stage_1)


def test_skip_stage_2_decodes_the_half_size_stage_1_latents(model_files, monkeypatch, reference_video, mask_video):
    """With skip_stage_2 the reference decodes stage 1's latents: ours decodes the same, at half
    size. Without the mask our stage 1 moves far beyond the parity figures, so the mask is in play."""
    reference_decoded, reference_stage_1, noises = _reference_run(
        model_files, monkeypatch, reference_video, mask_video, skip_stage_2=True
    )
    assert len(noises) == 2 and reference_decoded[0] is reference_stage_1[0]  # stage 1's video and audio
    latent_size = reference_decoded[0].shape[-1]
    for dtype in (mx.float32, mx.bfloat16):
        decoded, stage_1 = _our_run(model_files, monkeypatch, noises, dtype, reference_video, mask_video, True)
        assert decoded[0] is stage_1[0] and decoded[0].shape[-2:] == (latent_size, latent_size)
        _compare(dtype, "skip-stage-2", decoded, reference_decoded)
    unmasked, _ = _our_run(model_files, monkeypatch, noises, mx.float32, reference_video, None, True)
    assert relative_error(unmasked[0], reference_decoded[0]) > 1e-2


MASK_SHAPES = [
    # (pixel frames, height, width) -> (latent frames, height, width)
    ((17, 64, 64), (3, 2, 2)),
    ((9, 48, 80), (2, 5, 7)),  # 9.6 x 11.43 pixels per latent cell: overlapping areas
    ((25, 33, 47), (4, 3, 5)),
    ((1, 30, 20), (1, 4, 3)),
    ((9, 16, 16), (1, 16, 16)),  # more pixel frames than latent ones: the first frame alone
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("pixels", "latent"), MASK_SHAPES)
def test_mask_to_latent_tokens_matches_reference(pixels, latent, dtype):
    """Area-averaged in space, first frame alone then group means in time, times a strength:
    as the reference's `_downsample_mask_to_latent` (bit for bit in bfloat16)."""
    from ltx_core.types import VideoLatentShape
    from ltx_pipelines.ic_lora import ICLoraPipeline

    mask = torch.rand(1, 1, *pixels, generator=torch.Generator().manual_seed(sum(pixels))).to(dtype)
    for strength in (1.0, MASK_STRENGTH, 0.123):
        shape = VideoLatentShape(batch=1, channels=LATENT_CHANNELS, frames=latent[0], height=latent[1], width=latent[2])
        expected = ICLoraPipeline._downsample_mask_to_latent(mask, shape) * strength
        ours = ic_lora.mask_to_latent_tokens(to_mx(mask, mx.bfloat16 if dtype == torch.bfloat16 else mx.float32),
                                             *latent, strength=strength)  # fmt: skip
        assert ours.shape == tuple(expected.shape) == (1, int(np.prod(latent)))
        if dtype == torch.bfloat16:
            assert ours.dtype == mx.bfloat16
            np.testing.assert_array_equal(np.array(ours.astype(mx.float32)), expected.float().numpy())
        else:
            np.testing.assert_allclose(np.array(ours), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_attention_mask_loads_as_the_reference_loads_it(mask_video, monkeypatch):
    """The mask video's frames, resized to stage 1's size, channel mean in bfloat16 mapped to
    [0, 1]: bit for bit the reference's `_load_mask_video`."""
    from ltx_pipelines import ic_lora as reference
    from ltx_pipelines.utils import media_io

    monkeypatch.setattr(media_io, "decode_video_from_file", frames_as_we_decode_them)
    expected = reference._load_mask_video(mask_video, height=SIZE // 2, width=SIZE // 2, num_frames=FRAMES)
    ours = ic_lora.load_attention_mask(mask_video, SIZE // 2, SIZE // 2, FRAMES)
    assert ours.dtype == mx.bfloat16 and ours.shape == tuple(expected.shape) == (1, 1, FRAMES, SIZE // 2, SIZE // 2)
    np.testing.assert_array_equal(np.array(ours.astype(mx.float32)), expected.float().numpy())
    assert len(np.unique(expected.float().numpy())) > 20  # many gray levels, not just black and white


@pytest.mark.parametrize(("skip", "size"), [(True, SIZE // 2), (False, SIZE)])
def test_cli_writes_ic_lora_video_with_attention_mask(model_files, tmp_path, reference_video, mask_video, skip, size):
    checkpoint, gemma, _, upscaler, lora = model_files[:5]
    output = tmp_path / "fox.mp4"
    args = ["generate", "--pipeline", "ic-lora", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma),
            "--prompt", PROMPT, "--output-path", str(output), "--height", str(SIZE), "--width", str(SIZE),
            "--num-frames", "9", "--dtype", "float32", "--no-tiled-decode", "--spatial-upscaler-path", str(upscaler),
            "--lora", str(lora), "1.0", "--video-conditioning", reference_video, "1.0",
            "--conditioning-attention-mask", mask_video, str(MASK_STRENGTH)]  # fmt: skip
    args += ["--skip-stage-2"] if skip else []
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (size, size) and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 9

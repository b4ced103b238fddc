"""`--pipeline extend` (not in ltx-pipelines, so checked by construction): the clip's video
latents come out exactly as the VAE encoded them, and so does its audio up to the clip's end;
only what follows is generated. And it runs from the CLI."""

import imageio_ffmpeg
import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from LTX_2_MLX.cli import main
from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.pipelines import extend, retake
from LTX_2_MLX.pipelines.media_io import read_audio
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.retake import encode_clip_audio, encode_clip_video, probe_clip

GUIDANCE = MultiModalGuiderParams(cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.7, modality_scale=3.0)
AUDIO_LATENTS_PER_SECOND = 25  # 16 kHz, hop 160, 4x downsampled


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_extend_keeps_the_clip_and_generates_after_it(model_files, clip, monkeypatch, sixteen_mel_bins, dtype):
    captured = {}
    # Extend decodes through retake's denoise_from_clip.
    monkeypatch.setattr(retake, "decode_outputs", lambda ledger, video, audio, *a: captured.update(v=video, a=audio))
    ledger = ModelLedger(model_files[0], model_files[1], dtype=dtype)
    extend.ExtendPipeline(ledger)(
        source_video=clip, prompt="the fox keeps running", seed=3, extend_frames=16, num_inference_steps=2,
        negative_prompt="blurry", video_guider_params=GUIDANCE, audio_guider_params=GUIDANCE,
    )  # fmt: skip
    source = probe_clip(clip)
    clip_video, clip_audio = encode_clip_video(ledger, source), encode_clip_audio(ledger, source)
    video, audio = captured["v"], captured["a"]

    assert video.shape[2] == clip_video.shape[2] + 2  # 17 + 16 frames: 3 + 2 latent frames
    assert mx.array_equal(video[:, :, :3], clip_video)
    generated = video[:, :, 3:].astype(mx.float32)
    assert mx.all(mx.isfinite(generated)).item() and mx.std(generated).item() > 0.1

    # Audio latents that end before the clip does are the clip's; the rest is generated.
    kept = int(source.duration * AUDIO_LATENTS_PER_SECOND)
    assert audio.shape[2] == round((17 + 16) / 24 * AUDIO_LATENTS_PER_SECOND)
    assert mx.array_equal(audio[:, :, :kept], clip_audio[:, :, :kept])
    assert not mx.allclose(audio[:, :, kept + 1 :], mx.zeros_like(audio[:, :, kept + 1 :])).item()


def test_cli_extends_a_clip(model_files, clip, tmp_path, sixteen_mel_bins):
    output = tmp_path / "longer.mp4"
    args = ["generate", "--pipeline", "extend", "--checkpoint-path", model_files[0], "--gemma-path",
            str(model_files[1]), "--prompt", "the fox keeps running", "--video-path", clip, "--extend-frames", "8",
            "--num-inference-steps", "2", "--dtype", "float32", "--no-tiled-decode", "--output-path", str(output)]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (64, 64) and meta["fps"] == 24 and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 25
    waveform, _ = read_audio(output)  # the tiny vocoder's upsampling is short: only finite is checked
    assert np.isfinite(waveform).all()

"""Retake against ltx-pipelines' own RetakePipeline, end to end on the tiny complete checkpoint:
the clip encoded by both VAEs, the time-range masks, guided (or distilled) denoising from the
clip's latents, from identical injected noise; final latents compared in float32, and our bf16
run against the reference's float32 one. Regenerating video only, audio only, and both.

The reference reads the clip with PyAV and encodes its audio with torchaudio's mel front end,
placeholders here (conftest.py). It is fed the very frames and waveform our readers decode
(its `get_videostream_metadata`, `decode_video_from_file` and `decode_audio_from_file` are
replaced), and its `encode_audio` computes the log-mel with test_audio_vae's torch
transcription of torchaudio. The tiny audio VAE's encoder takes 16 mel bins while the
checkpoint's config says 64 (for the vocoder), so both sides encode with 16. The rest of the
set-up (float32 `torch`, tiny ledgers) is test_pipeline_parity's.
"""

from functools import partial

import mlx.core as mx
import pytest
import torch
from click.testing import CliRunner
from pipeline_harness import assert_pipeline_parity, replaying_noiser, run_reference_in_float32, use_tiny_text_encoder
from reference import to_mx
from test_audio_vae import MEL_BINS, reference_log_mel, reference_resample
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.cli import main
from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import retake
from LTX_2_MLX.pipelines.media_io import read_audio, read_video_file
from LTX_2_MLX.pipelines.model_ledger import ModelLedger

FRAMES, FPS, SIZE = 17, 24.0, 64
VIDEO = dict(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
AUDIO = dict(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
PROMPT, NEGATIVE = "a red fox runs", "blurry"
AUDIO_TOKENS = round(FRAMES / FPS * 25)
VIDEO_TOKENS = 3 * (SIZE // 32) ** 2  # 17 frames are 3 latent frames
START, END = 0.5, 0.7  # only the last latent frame (pixel frames 9-16) overlaps
# (regenerate_video, regenerate_audio, distilled)
CASES = {"video only": (True, False, False), "audio only": (False, True, False), "both": (True, True, False),
         "both, distilled": (True, True, True)}  # fmt: skip


def _noises() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(321)
    return [torch.randn(1, VIDEO_TOKENS, LATENT_CHANNELS, generator=gen), torch.randn(1, AUDIO_TOKENS, 16, generator=gen)]


def _reference_run(case, model_files, clip, monkeypatch, noises):
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.types import Audio
    from ltx_pipelines import retake as reference
    from ltx_pipelines.utils import media_io as reference_media_io

    checkpoint, gemma = model_files[:2]
    regenerate_video, regenerate_audio, distilled = CASES[case]
    captured = {}

    frames, fps = read_video_file(clip)
    waveform, sample_rate = read_audio(clip)

    def encode_audio(audio, encoder, processor=None):
        wave = audio.waveform
        if audio.sampling_rate != encoder.sample_rate:
            wave = reference_resample(wave, audio.sampling_rate, encoder.sample_rate)
        return encoder(reference_log_mel(wave, encoder.sample_rate, encoder.n_fft, encoder.mel_hop_length, MEL_BINS))

    run_reference_in_float32(monkeypatch, reference, tiny_audio_shape_in=[reference])
    monkeypatch.setattr(reference, "GaussianNoiser", replaying_noiser(noises))
    monkeypatch.setattr(reference, "get_videostream_metadata", lambda path: (fps, len(frames), SIZE, SIZE))
    monkeypatch.setattr(reference_media_io, "decode_video_from_file",
                        lambda path, frame_cap, device: (torch.from_numpy(f.copy())[None] for f in frames[:frame_cap]))  # fmt: skip
    monkeypatch.setattr(reference, "decode_audio_from_file",
                        lambda path, device: Audio(torch.from_numpy(waveform)[None], sample_rate))  # fmt: skip
    monkeypatch.setattr(reference, "vae_encode_audio", encode_audio)
    monkeypatch.setattr(reference, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    monkeypatch.setattr(reference, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    pipeline = reference.RetakePipeline(str(checkpoint), str(gemma), loras=[], device=torch.device("cpu"))
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    use_tiny_text_encoder(pipeline.model_ledger, gemma)
    with torch.no_grad():
        pipeline(clip, PROMPT, START, END, seed=1, negative_prompt=NEGATIVE, num_inference_steps=3,
                 video_guider_params=RefParams(**VIDEO), audio_guider_params=RefParams(**AUDIO),
                 regenerate_video=regenerate_video, regenerate_audio=regenerate_audio, distilled=distilled)  # fmt: skip
    return captured["video"], captured["audio"]


def _our_run(case, model_files, clip, monkeypatch, noises, dtype):
    captured = {}

    def capture(ledger, video, audio, *args):
        captured.update(video=video, audio=audio)

    monkeypatch.setattr(retake, "decode_outputs", capture)
    regenerate_video, regenerate_audio, distilled = CASES[case]
    ledger = ModelLedger(model_files[0], model_files[1], dtype=dtype)
    guided = {} if distilled else dict(
        negative_prompt=NEGATIVE, num_inference_steps=3, video_guider_params=MultiModalGuiderParams(**VIDEO),
        audio_guider_params=MultiModalGuiderParams(**AUDIO),
    )  # fmt: skip
    pipeline = retake.RetakeDistilledPipeline if distilled else retake.RetakePipeline
    pipeline(ledger)(
        source_video=clip, prompt=PROMPT, start_time=START, end_time=END, seed=1, regenerate_video=regenerate_video,
        regenerate_audio=regenerate_audio, noiser=InjectedNoiser([to_mx(n, dtype) for n in noises]), **guided,
    )  # fmt: skip
    return captured["video"], captured["audio"]


@pytest.mark.parametrize("case", list(CASES))
def test_retake_matches_ltx_pipelines(case, model_files, clip, monkeypatch, sixteen_mel_bins):
    noises = _noises()
    reference_latents = _reference_run(case, model_files, clip, monkeypatch, noises)
    run = partial(_our_run, case, model_files, clip, monkeypatch, noises)
    assert_pipeline_parity(f"retake ({case})", reference_latents, run)


def test_retake_keeps_the_clip_outside_the_time_range(model_files, clip, monkeypatch, sixteen_mel_bins):
    ledger = ModelLedger(model_files[0], model_files[1], dtype=mx.float32)
    source = retake.probe_clip(clip)
    clip_video, clip_audio = retake.encode_clip_video(ledger, source), retake.encode_clip_audio(ledger, source)
    video, audio = _our_run("both", model_files, clip, monkeypatch, _noises(), mx.float32)
    # Latent frames 0 and 1 hold pixel frames 0-8 (up to 0.375 s); audio latents last 0.04 s.
    assert mx.array_equal(video[:, :, :2], clip_video[:, :, :2])
    assert not mx.allclose(video[:, :, 2:], clip_video[:, :, 2:])
    assert mx.array_equal(audio[:, :, :12], clip_audio[:, :, :12])
    assert not mx.allclose(audio[:, :, 13:], clip_audio[:, :, 13:])
    video, audio = _our_run("video only", model_files, clip, monkeypatch, _noises(), mx.float32)
    assert mx.array_equal(audio, clip_audio)
    video, audio = _our_run("audio only", model_files, clip, monkeypatch, _noises(), mx.float32)
    assert mx.array_equal(video, clip_video)


def test_retake_from_the_command_line(model_files, clip, tmp_path, sixteen_mel_bins):
    out = tmp_path / "retaken.mp4"
    result = CliRunner().invoke(main, [
        "generate", "--pipeline", "retake", "--checkpoint-path", str(model_files[0]), "--gemma-path",
        str(model_files[1]), "--prompt", PROMPT, "--video-path", clip, "--start-time", str(START), "--end-time",
        str(END), "--num-inference-steps", "2", "--dtype", "float32", "--output-path", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    frames, fps = read_video_file(out)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and fps == FPS
    assert read_audio(out)[0].shape[1] > 0

"""`--pipeline a2vid` against ltx-pipelines' own A2VidPipelineTwoStage, end to end on the tiny
complete checkpoint: Gemma + connectors, image conditioning, the audio VAE encoding of a real
audio file (resampled 24 kHz -> 16 kHz, cut at a start time), guided stage 1 with the audio held
fixed, the latent upscale, and the stage-2 refinement with the distilled LoRA fused, from
identical noise. Final video and audio latents are compared in float32, and our bf16 run
against the reference's float32 one; then the CLI writes an mp4 carrying the given audio.

What the reference is given in place of what it cannot run here (as in test_pipeline_parity):
- Its audio reading (`decode_audio_from_file`, PyAV) is a placeholder in the tests: it is
  handed the waveform our `read_audio` decodes (the same samples both sides encode).
- Its log-mel front end is torchaudio's (a placeholder too): it gets test_audio_vae's torch
  transcription of torchaudio's resample and MelSpectrogram, as test_encode_audio does.
- It runs in float32 on the CPU (bfloat16 read as float32, CUDA synchronisation a no-op), and
  ltx-core fuses LoRAs only into bf16/fp8 weights: for float32 weights it is let through the
  bf16 path (weight + delta, no rounding).
- Its text encoder and embeddings processor are the tiny ones in the files; the tiny audio VAE
  has 4 latent channels x 4 mel bins.
The tiny checkpoint's audio VAE config says 64 mel bins for its vocoder's sake; a2vid never
decodes audio, so these tests use a copy whose audio VAE reads 16 mel bins, the size its
per-channel statistics encode.
"""

import json
import subprocess
from functools import partial

import imageio_ffmpeg
import mlx.core as mx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pipeline_harness import assert_pipeline_parity, replaying_noiser, run_reference_in_float32, use_tiny_text_encoder
from reference import to_mx
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_audio_vae import MEL_BINS, reference_log_mel, reference_resample
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.cli import main
from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import a2vid, common
from LTX_2_MLX.pipelines.common import GeneratedVideo
from LTX_2_MLX.pipelines.media_io import read_audio
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import ImageConditioningInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VIDEO = dict(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
PROMPT, NEGATIVE, FRAMES, FPS, SIZE = "a red fox barks", "blurry", 17, 24.0, 128
AUDIO_START, AUDIO_SECONDS = 0.25, FRAMES / FPS
AUDIO_TOKENS = round(FRAMES / FPS * 25)
VIDEO_TOKENS = [3 * 2 * 2, 3 * 4 * 4]  # 17 frames are 3 latent frames; half then full size


@pytest.fixture(scope="module")
def a2vid_files(model_files, tmp_path_factory):
    """(checkpoint with a 16-mel audio VAE, gemma, image, upscaler, LoRA, a 1.2 s stereo wav at 24 kHz)."""
    checkpoint, gemma, image, upscaler, lora, _ = model_files
    folder = tmp_path_factory.mktemp("a2vid")
    with safe_open(checkpoint, "pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["config"])
    config["audio_vae"]["model"]["params"]["ddconfig"]["mel_bins"] = MEL_BINS
    metadata["config"] = json.dumps(config)
    variant = folder / "ltx-tiny-a2vid.safetensors"
    save_file(load_file(checkpoint), str(variant), metadata=metadata)
    audio = folder / "bark.wav"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "aevalsrc=0.3*sin(2*PI*440*t)*exp(-2*t)|0.2*sin(2*PI*660*t)+0.05*sin(2*PI*97*t):s=24000:d=1.2",
         "-c:a", "pcm_s16le", str(audio)],
        check=True,
    )  # fmt: skip
    return str(variant), gemma, image, upscaler, lora, str(audio)


def _noises() -> list[torch.Tensor]:
    """Video then audio noise for each stage (the audio's is drawn, then scaled by 0)."""
    gen = torch.Generator().manual_seed(123)
    noises = []
    for tokens in VIDEO_TOKENS:
        noises.append(torch.randn(1, tokens, LATENT_CHANNELS, generator=gen))
        noises.append(torch.randn(1, AUDIO_TOKENS, 16, generator=gen))
    return noises


def _reference_run(files, monkeypatch, noises):
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_core.model.audio_vae import encode_audio as ref_encode_audio
    from ltx_core.types import Audio as RefAudio
    from ltx_pipelines import a2vid_two_stage as module
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage

    checkpoint, gemma, image, upscaler, lora, audio_path = files
    captured = {}

    class TorchMel:
        """torchaudio's resample + MelSpectrogram, transcribed in torch (test_audio_vae)."""

        def __init__(self, encoder):
            self.encoder = encoder

        def waveform_to_mel(self, audio):
            rate, waveform = self.encoder.sample_rate, audio.waveform
            if audio.sampling_rate != rate:
                waveform = reference_resample(waveform, audio.sampling_rate, rate)
            encoder = self.encoder
            return reference_log_mel(waveform, rate, encoder.n_fft, encoder.mel_hop_length, encoder.mel_bins)

    def decoded_audio(path, device, start_time=0.0, max_duration=None):
        waveform, rate = read_audio(path, start_time, max_duration)
        return RefAudio(waveform=torch.from_numpy(waveform.copy())[None], sampling_rate=rate)

    def denoise_capturing_audio(*args, denoising_loop_fn, **kwargs):
        def loop(*loop_args):
            video_state, audio_state = denoising_loop_fn(*loop_args)
            captured["audio"] = audio_state.latent
            return video_state, audio_state

        return original_denoise(*args, denoising_loop_fn=loop, **kwargs)

    original_denoise = module.denoise_video_only
    run_reference_in_float32(monkeypatch, module)
    monkeypatch.setattr(module, "GaussianNoiser", replaying_noiser(noises))
    monkeypatch.setattr(module, "decode_audio_from_file", decoded_audio)
    monkeypatch.setattr(module, "vae_encode_audio", lambda audio, enc: ref_encode_audio(audio, enc, TorchMel(enc)))
    monkeypatch.setattr(module, "denoise_video_only", denoise_capturing_audio)
    monkeypatch.setattr(module, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    cpu = torch.device("cpu")
    pipeline = module.A2VidPipelineTwoStage(
        checkpoint, [LoraPathStrengthAndSDOps(lora, 0.6, LTXV_LORA_COMFY_RENAMING_MAP)], str(upscaler), str(gemma),
        loras=[], device=cpu,
    )  # fmt: skip
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    use_tiny_text_encoder(pipeline.stage_1_model_ledger, gemma)
    with torch.no_grad():
        pipeline(
            prompt=PROMPT, negative_prompt=NEGATIVE, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
            num_inference_steps=3, video_guider_params=RefParams(**VIDEO), images=[RefImage(str(image), 0, 1.0, crf=0)],
            audio_path=audio_path, audio_start_time=AUDIO_START, audio_max_duration=AUDIO_SECONDS,
        )  # fmt: skip
    # The loop works on patchified audio, (B, T, channels x mel bins); ours returns (B, C, T, mel bins).
    audio = captured["audio"]
    return captured["video"], audio.reshape(1, audio.shape[1], 4, 4).permute(0, 2, 1, 3)


def _our_run(files, monkeypatch, noises, dtype):
    checkpoint, gemma, image, upscaler, lora, audio_path = files
    captured = {}
    original_denoise = a2vid.denoise_stage

    def denoise_capturing(*args, **kwargs):
        video_state, audio_state = original_denoise(*args, **kwargs)
        captured.update(audio=audio_state.latent, encoded=kwargs["initial_audio_latent"])
        return video_state, audio_state

    def capture(ledger, video, audio, fps, *args):
        captured["video"] = video
        return GeneratedVideo(frames=iter(()), fps=fps, audio=None)

    monkeypatch.setattr(a2vid, "denoise_stage", denoise_capturing)  # stage 1
    monkeypatch.setattr(common, "denoise_stage", denoise_capturing)  # stage 2, inside refine_upscaled
    monkeypatch.setattr(a2vid, "decode_outputs", capture)
    ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler)
    result = a2vid.A2VidPipelineTwoStage(ledger)(
        prompt=PROMPT, negative_prompt=NEGATIVE, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
        num_inference_steps=3, video_guider_params=MultiModalGuiderParams(**VIDEO), audio_path=audio_path,
        audio_start_time=AUDIO_START, audio_max_duration=AUDIO_SECONDS,
        images=[ImageConditioningInput(str(image), 0, 1.0, crf=0)],
        noiser=InjectedNoiser([to_mx(n, dtype) for n in noises]), distilled_lora=(str(lora), 0.6),
    )  # fmt: skip
    # The audio is held: what leaves stage 2 is exactly what the audio VAE encoded.
    assert mx.array_equal(captured["audio"], captured["encoded"])
    waveform, rate = result.audio
    assert rate == 24000 and waveform.shape == (2, round(AUDIO_SECONDS * rate))
    return captured["video"], captured["audio"]


def test_a2vid_matches_ltx_pipelines(a2vid_files, monkeypatch):
    noises = _noises()
    reference_latents = _reference_run(a2vid_files, monkeypatch, noises)
    run = partial(_our_run, a2vid_files, monkeypatch, noises)
    assert_pipeline_parity("a2vid pipeline", reference_latents, run, tol=1e-4)


def test_read_audio_cuts_like_the_reference(a2vid_files):
    """Stereo float samples at the file's own rate, from the start time for max_duration."""
    audio_path = a2vid_files[5]
    whole, rate = read_audio(audio_path)
    assert rate == 24000 and whole.shape == (2, round(1.2 * rate)) and whole.dtype == np.float32
    cut, _ = read_audio(audio_path, AUDIO_START, 0.5)
    start = round(AUDIO_START * rate)
    assert np.array_equal(cut, whole[:, start : start + round(0.5 * rate)])
    with pytest.raises(ValueError, match="past the end"):
        read_audio(audio_path, 1.5)


def test_cli_writes_video_with_the_given_audio(a2vid_files, tmp_path):
    checkpoint, gemma, _, upscaler, lora, audio_path = a2vid_files
    output = tmp_path / "bark.mp4"
    args = ["generate", "--pipeline", "a2vid", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma),
            "--prompt", PROMPT, "--output-path", str(output), "--height", "128", "--width", "128",
            "--num-frames", "9", "--num-inference-steps", "2", "--dtype", "float32", "--no-tiled-decode",
            "--spatial-upscaler-path", str(upscaler), "--distilled-lora", str(lora), "0.6",
            "--audio-path", audio_path, "--audio-start-time", "0.5"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (128, 128) and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 9
    # The given waveform, cut to the video's 9 / 24 s (AAC adds at most a frame of padding).
    written, rate = read_audio(output)
    assert rate == 24000 and 9 / 24 <= written.shape[1] / rate < 9 / 24 + 0.05
    given, _ = read_audio(audio_path, 0.5, 9 / 24)
    assert np.corrcoef(written[0, : given.shape[1]], given[0])[0, 1] > 0.9

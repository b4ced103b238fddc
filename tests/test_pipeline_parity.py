"""The one-stage pipeline against ltx-pipelines' own TI2VidOneStagePipeline, end to end on the
tiny complete checkpoint of test_generate: Gemma + connectors, image conditioning, guided
denoising (CFG, STG, modality guidance), from identical noise. Final latents compared in
float32.

The reference pipeline hard-codes bfloat16 and CUDA synchronisation; for a float32 CPU run its
module sees a `torch` whose bfloat16 is float32, and synchronisation is a no-op. Its text
encoder and embeddings processor builders hard-code the 12B sizes, so the ledger hands out the
tiny reference modules instead (the same weights the checkpoint and Gemma directory hold).
"""

import copy

import mlx.core as mx
import pytest
import torch
from reference import assert_cosine, assert_matches, to_mx
from test_generate import model_files  # noqa: F401  (the shared tiny model files)
from test_text_encoder_processor import reference_processor

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import ti2vid_one_stage
from LTX_2_MLX.pipelines.common import ImageConditioningInput
from LTX_2_MLX.pipelines.model_ledger import ModelLedger

VIDEO = dict(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
AUDIO = dict(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
SIZE = dict(height=64, width=64, num_frames=17, frame_rate=24.0, num_inference_steps=3)


class _Float32Torch:
    """torch, except that bfloat16 means float32."""

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


def _reference_run(model_files, monkeypatch, noises):
    from ltx_core.components.noisers import Noiser
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from ltx_pipelines import ti2vid_one_stage as reference
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage
    from transformers import Gemma3ForConditionalGeneration

    checkpoint, gemma, image = model_files[:3]
    captured = {}

    class Injected(Noiser):
        def __init__(self, generator=None):
            self.noises = list(noises)

        def __call__(self, latent_state, noise_scale=1.0):
            noise = self.noises.pop(0).to(latent_state.latent.dtype)
            mask = latent_state.denoise_mask * noise_scale
            return type(latent_state)(**{**latent_state.__dict__, "latent": noise * mask + latent_state.latent * (1 - mask)})

    from ltx_core.types import AudioLatentShape
    from ltx_pipelines.utils import helpers
    from test_video_vae import LATENT_CHANNELS

    class TinyAudioShape:
        """The tiny audio VAE's 4 channels x 4 mel bins (the reference assumes 8 x 16)."""

        @staticmethod
        def from_video_pixel_shape(shape):
            return AudioLatentShape.from_video_pixel_shape(shape, channels=4, mel_bins=4)

    monkeypatch.setattr(helpers, "AudioLatentShape", TinyAudioShape)
    monkeypatch.setattr(reference, "torch", _Float32Torch())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)
    monkeypatch.setattr(reference, "GaussianNoiser", Injected)
    monkeypatch.setattr(reference, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    monkeypatch.setattr(reference, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    pipeline = reference.TI2VidOneStagePipeline(str(checkpoint), str(gemma), loras=[], device=torch.device("cpu"))
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    gemma_model = Gemma3ForConditionalGeneration.from_pretrained(str(gemma), dtype=torch.float32).eval()
    processor, _ = reference_processor(True, "split", True, True, True, seed=3, gemma_width=64, num_states=4)
    pipeline.model_ledger.text_encoder = lambda: GemmaTextEncoder(
        model=gemma_model, tokenizer=LTXVGemmaTokenizer(str(gemma), 1024)
    )
    pipeline.model_ledger.gemma_embeddings_processor = lambda: copy.deepcopy(processor)
    with torch.no_grad():
        pipeline(
            prompt="a red fox runs", negative_prompt="blurry", seed=1, **SIZE,
            video_guider_params=RefParams(**VIDEO), audio_guider_params=RefParams(**AUDIO),
            images=[RefImage(str(image), 0, 1.0, crf=0)],
        )  # fmt: skip
    return captured["video"], captured["audio"]


def _our_run(model_files, monkeypatch, noises, dtype=mx.float32):
    captured = {}
    monkeypatch.setattr(
        ti2vid_one_stage, "decode_outputs",
        lambda ledger, video, audio, *args: captured.update(video=video, audio=audio),
    )  # fmt: skip
    checkpoint, gemma, image = model_files[:3]
    pipeline = ti2vid_one_stage.TI2VidOneStagePipeline(ModelLedger(checkpoint, gemma, dtype=dtype))
    pipeline(
        "a red fox runs", "blurry", 1, **SIZE, video_guider_params=MultiModalGuiderParams(**VIDEO),
        audio_guider_params=MultiModalGuiderParams(**AUDIO), images=[ImageConditioningInput(str(image), 0, 1.0, crf=0)],
        noiser=InjectedNoiser([to_mx(n, dtype) for n in noises]),
    )  # fmt: skip
    return captured["video"], captured["audio"]


def test_one_stage_pipeline_matches_ltx_pipelines(model_files, monkeypatch):  # noqa: F811
    from test_video_vae import LATENT_CHANNELS

    gen = torch.Generator().manual_seed(123)
    # 17 frames of 64x64 -> 3 x 2 x 2 video tokens; audio tokens for 17/24 s at 25 per second.
    noises = [torch.randn(1, 12, LATENT_CHANNELS, generator=gen), torch.randn(1, round(17 / 24 * 25), 16, generator=gen)]
    reference_video, reference_audio = _reference_run(model_files, monkeypatch, noises)
    video, audio = _our_run(model_files, monkeypatch, noises)
    assert_matches("one-stage pipeline vs ltx-pipelines fp32: video latent", video, reference_video)
    assert_matches("one-stage pipeline vs ltx-pipelines fp32: audio latent", audio, reference_audio)
    video, audio = _our_run(model_files, monkeypatch, noises, mx.bfloat16)
    assert_cosine("one-stage pipeline bf16 vs ltx-pipelines fp32: video latent", video, reference_video)
    assert_cosine("one-stage pipeline bf16 vs ltx-pipelines fp32: audio latent", audio, reference_audio)

"""Pipelines against ltx-pipelines' own pipelines, end to end on the tiny complete checkpoint of
test_generate: Gemma + connectors, image conditioning, denoising (guided for one-stage), the
latent upscale and refinement (distilled), from identical noise. Final latents compared in
float32, and our bf16 run against the reference's float32 one.

The reference pipelines hard-code bfloat16 and CUDA synchronisation; for a float32 CPU run
their module sees a `torch` whose bfloat16 is float32, and synchronisation is a no-op. Their
text encoder and embeddings processor builders hard-code the 12B sizes and the latent layout
the 128-channel VAE, so the ledgers hand out the tiny reference modules (the weights the
checkpoint and Gemma directory hold) and the tiny latent layout is set. (The two-stage and
keyframe pipelines fuse the distilled LoRA, which the reference refuses on float32 weights,
so they are covered by test_generate's end-to-end runs instead.)
"""

import copy

import mlx.core as mx
import pytest
import torch
from reference import assert_cosine, assert_matches, to_mx
from test_text_encoder_processor import reference_processor
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import common, ti2vid_one_stage, two_stage
from LTX_2_MLX.pipelines.common import ImageConditioningInput
from LTX_2_MLX.pipelines.model_ledger import ModelLedger

VIDEO = dict(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
AUDIO = dict(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
PROMPT, NEGATIVE, FRAMES, FPS = "a red fox runs", "blurry", 17, 24.0
AUDIO_TOKENS = round(FRAMES / FPS * 25)
# kind -> (output size, video tokens per stage): 17 frames are 3 latent frames.
KINDS = {"one-stage": (64, [3 * 2 * 2]), "distilled": (128, [3 * 2 * 2, 3 * 4 * 4])}


class _Float32Torch:
    """torch, except that bfloat16 means float32."""

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


def _noises(kind: str) -> list[torch.Tensor]:
    """Video then audio noise for each stage, as the pipelines draw them."""
    gen = torch.Generator().manual_seed(123)
    noises = []
    for tokens in KINDS[kind][1]:
        noises += [torch.randn(1, tokens, LATENT_CHANNELS, generator=gen), torch.randn(1, AUDIO_TOKENS, 16, generator=gen)]
    return noises


def _reference_run(kind, model_files, monkeypatch, noises):
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.components.noisers import Noiser
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from ltx_core.types import AudioLatentShape
    from ltx_pipelines import distilled, ti2vid_one_stage as one_stage
    from ltx_pipelines.utils import helpers
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage
    from transformers import Gemma3ForConditionalGeneration

    checkpoint, gemma, image, upscaler = model_files[:4]
    module = one_stage if kind == "one-stage" else distilled
    captured = {}

    class Injected(Noiser):
        def __init__(self, generator=None):
            self.noises = list(noises)

        def __call__(self, latent_state, noise_scale=1.0):
            noise = self.noises.pop(0).to(latent_state.latent.dtype)
            mask = latent_state.denoise_mask * noise_scale
            return type(latent_state)(**{**latent_state.__dict__, "latent": noise * mask + latent_state.latent * (1 - mask)})

    class TinyAudioShape:
        """The tiny audio VAE's 4 channels x 4 mel bins (the reference assumes 8 x 16)."""

        @staticmethod
        def from_video_pixel_shape(shape):
            return AudioLatentShape.from_video_pixel_shape(shape, channels=4, mel_bins=4)

    monkeypatch.setattr(helpers, "AudioLatentShape", TinyAudioShape)
    monkeypatch.setattr(module, "torch", _Float32Torch())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)
    monkeypatch.setattr(module, "GaussianNoiser", Injected)
    monkeypatch.setattr(module, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    monkeypatch.setattr(module, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    cpu = torch.device("cpu")
    if kind == "one-stage":
        pipeline = one_stage.TI2VidOneStagePipeline(str(checkpoint), str(gemma), loras=[], device=cpu)
    else:
        pipeline = distilled.DistilledPipeline(str(checkpoint), str(gemma), str(upscaler), loras=[], device=cpu)
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    gemma_model = Gemma3ForConditionalGeneration.from_pretrained(str(gemma), dtype=torch.float32).eval()
    processor, _ = reference_processor(True, "split", True, True, True, seed=3, gemma_width=64, num_states=4)
    pipeline.model_ledger.text_encoder = lambda: GemmaTextEncoder(
        model=gemma_model, tokenizer=LTXVGemmaTokenizer(str(gemma), 1024)
    )
    pipeline.model_ledger.gemma_embeddings_processor = lambda: copy.deepcopy(processor)
    size = KINDS[kind][0]
    shared = dict(prompt=PROMPT, seed=1, height=size, width=size, num_frames=FRAMES, frame_rate=FPS,
                  images=[RefImage(str(image), 0, 1.0, crf=0)])  # fmt: skip
    with torch.no_grad():
        if kind == "one-stage":
            pipeline(**shared, negative_prompt=NEGATIVE, num_inference_steps=3, video_guider_params=RefParams(**VIDEO),
                     audio_guider_params=RefParams(**AUDIO))  # fmt: skip
        else:
            pipeline(**shared)
    return captured["video"], captured["audio"]


def _our_run(kind, model_files, monkeypatch, noises, dtype):
    captured = {}

    def capture(ledger, video, audio, *args):
        captured.update(video=video, audio=audio)

    for module in (common, ti2vid_one_stage, two_stage):
        monkeypatch.setattr(module, "decode_outputs", capture)
    checkpoint, gemma, image, upscaler = model_files[:4]
    ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler)
    size = KINDS[kind][0]
    shared = dict(prompt=PROMPT, seed=1, height=size, width=size, num_frames=FRAMES, frame_rate=FPS,
                  images=[ImageConditioningInput(str(image), 0, 1.0, crf=0)],
                  noiser=InjectedNoiser([to_mx(n, dtype) for n in noises]))  # fmt: skip
    if kind == "one-stage":
        ti2vid_one_stage.TI2VidOneStagePipeline(ledger)(
            **shared, negative_prompt=NEGATIVE, num_inference_steps=3,
            video_guider_params=MultiModalGuiderParams(**VIDEO), audio_guider_params=MultiModalGuiderParams(**AUDIO),
        )  # fmt: skip
    else:
        two_stage.DistilledPipeline(ledger)(**shared)
    return captured["video"], captured["audio"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pipeline_matches_ltx_pipelines(kind, model_files, monkeypatch):
    noises = _noises(kind)
    reference_video, reference_audio = _reference_run(kind, model_files, monkeypatch, noises)
    video, audio = _our_run(kind, model_files, monkeypatch, noises, mx.float32)
    assert_matches(f"{kind} pipeline vs ltx-pipelines fp32: video latent", video, reference_video)
    assert_matches(f"{kind} pipeline vs ltx-pipelines fp32: audio latent", audio, reference_audio)
    video, audio = _our_run(kind, model_files, monkeypatch, noises, mx.bfloat16)
    assert_cosine(f"{kind} pipeline bf16 vs ltx-pipelines fp32: video latent", video, reference_video)
    assert_cosine(f"{kind} pipeline bf16 vs ltx-pipelines fp32: audio latent", audio, reference_audio)

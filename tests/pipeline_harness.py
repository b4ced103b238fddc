"""The reference side of the end-to-end pipeline comparisons (test_pipeline_parity, test_a2vid,
test_retake, test_two_stage_hq): ltx-pipelines run on the CPU in float32 on the tiny complete
checkpoint, fed the noise our side is fed.

- ltx-pipelines computes in bfloat16: its modules see a `torch` whose bfloat16 is float32.
- ltx-core's LoRA fusion refuses float32 weights: float32 goes through its bfloat16 path,
  which adds the delta to the weight with no rounding.
- The reference assumes LTX-2's 8 audio channels x 16 mel bins; the tiny audio VAE has 4 x 4.
- The reference's Gemma is transformers' on the tiny Gemma directory, with the tiny
  embeddings processor the checkpoint was built from.
"""

import copy

import torch
from reference import assert_cosine, assert_matches
from test_text_encoder_processor import reference_processor


class Float32Torch:
    """torch, except that bfloat16 means float32."""

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


class TinyAudioShape:
    """The tiny audio VAE's 4 channels x 4 mel bins (the reference assumes 8 x 16)."""

    @staticmethod
    def from_video_pixel_shape(shape):
        from ltx_core.types import AudioLatentShape

        return AudioLatentShape.from_video_pixel_shape(shape, channels=4, mel_bins=4)


def _noised(latent_state, noise: torch.Tensor, noise_scale: float):
    mask = latent_state.denoise_mask * noise_scale
    latent = noise.to(latent_state.latent.dtype) * mask + latent_state.latent * (1 - mask)
    return type(latent_state)(**{**latent_state.__dict__, "latent": latent})


def replaying_noiser(noises: list[torch.Tensor]) -> type:
    """A reference Noiser class that hands out `noises` in order (a fresh copy per instance)."""
    from ltx_core.components.noisers import Noiser

    class Replaying(Noiser):
        def __init__(self, generator=None):
            self.noises = list(noises)

        def __call__(self, latent_state, noise_scale=1.0):
            return _noised(latent_state, self.noises.pop(0), noise_scale)

    return Replaying


def drawing_noiser(generator: torch.Generator, drawn: list[torch.Tensor]) -> type:
    """A reference Noiser class that draws each noise from `generator` when needed and records
    it in `drawn`, for pipelines whose token counts are only known as they run."""
    from ltx_core.components.noisers import Noiser

    class Drawing(Noiser):
        def __init__(self, generator=None):
            pass

        def __call__(self, latent_state, noise_scale=1.0):
            noise = torch.randn(latent_state.latent.shape, generator=generator)
            drawn.append(noise.to(latent_state.latent.dtype))
            return _noised(latent_state, drawn[-1], noise_scale)

    return Drawing


def run_reference_in_float32(monkeypatch, module, tiny_audio_shape_in=()) -> None:
    """Patch ltx-pipelines' `module` (and its helpers) to run in float32 on the CPU, LoRAs
    fused in float32 and the tiny audio shape (also where `tiny_audio_shape_in` import it)."""
    from ltx_core.loader import fuse_loras
    from ltx_pipelines.utils import helpers

    original_fuse = fuse_loras._fuse_deltas

    def fuse_float32_too(deltas, weight, key, *args):
        if deltas is not None and weight.dtype == torch.float32:
            return fuse_loras._fuse_delta_with_bfloat16(deltas, weight, key, args[1])
        return original_fuse(deltas, weight, key, *args)

    monkeypatch.setattr(fuse_loras, "_fuse_deltas", fuse_float32_too)
    for holder in (helpers, *tiny_audio_shape_in):
        monkeypatch.setattr(holder, "AudioLatentShape", TinyAudioShape)
    monkeypatch.setattr(module, "torch", Float32Torch())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)


def use_tiny_text_encoder(model_ledger, gemma) -> None:
    """The reference ledger's Gemma and embeddings processor: the tiny ones, in float32."""
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from transformers import Gemma3ForConditionalGeneration

    gemma_model = Gemma3ForConditionalGeneration.from_pretrained(str(gemma), dtype=torch.float32).eval()
    processor, _ = reference_processor(True, "split", True, True, True, seed=3, gemma_width=64, num_states=4)
    model_ledger.text_encoder = lambda: GemmaTextEncoder(model=gemma_model, tokenizer=LTXVGemmaTokenizer(str(gemma), 1024))
    model_ledger.gemma_embeddings_processor = lambda: copy.deepcopy(processor)


def assert_pipeline_parity(name: str, reference_latents, our_run, tol: float = 1e-5) -> None:
    """Our float32 run within `tol` of the reference's latents (video, audio), our bfloat16 run
    at cosine >= 0.999; `our_run(dtype)` returns (video, audio)."""
    import mlx.core as mx

    reference_video, reference_audio = reference_latents
    video, audio = our_run(mx.float32)
    assert_matches(f"{name} vs ltx-pipelines fp32: video latent", video, reference_video, tol=tol)
    assert_matches(f"{name} vs ltx-pipelines fp32: audio latent", audio, reference_audio, tol=tol)
    video, audio = our_run(mx.bfloat16)
    assert_cosine(f"{name} bf16 vs ltx-pipelines fp32: video latent", video, reference_video)
    assert_cosine(f"{name} bf16 vs ltx-pipelines fp32: audio latent", audio, reference_audio)


def frames_as_we_decode_them(path, frame_cap, device):
    """Stands in for ltx-pipelines' `decode_video_from_file`: the frames our reader decodes, so
    both sides condition on the same pixels."""
    from LTX_2_MLX.pipelines.media_io import read_video_file

    for frame in read_video_file(path)[0][:frame_cap]:
        yield torch.from_numpy(frame.copy())[None]


def capturing_stage_1(denoise, captured: dict):
    """`denoise` (returning video and audio states) that keeps its first call's latents as
    captured["stage 1"]."""

    def denoise_capturing_stage_1(*args, **kwargs):
        video_state, audio_state = denoise(*args, **kwargs)
        captured.setdefault("stage 1", (video_state.latent, audio_state.latent))
        return video_state, audio_state

    return denoise_capturing_stage_1

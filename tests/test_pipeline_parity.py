"""Pipelines against ltx-pipelines' own pipelines, end to end on the tiny complete checkpoint of
test_generate: Gemma + connectors, image conditioning, denoising (guided for one-stage, two-stage
and keyframes), the latent upscale and the stage-2 refinement, from identical noise. Final video
and audio latents compared in float32, and our bf16 run against the reference's float32 one.

- one-stage, distilled: TI2VidOneStagePipeline, DistilledPipeline.
- two-stage: TI2VidTwoStagesPipeline, the distilled LoRA fused for stage 2.
- keyframes: KeyframeInterpolationPipeline, keyframe tokens for images at three frames.
- ic-lora: ICLoraPipeline, the reference video's latent tokens beside the generated ones with
  the LoRA (as an IC-LoRA) fused for stage 1 only.

The reference pipelines hard-code bfloat16 and CUDA synchronisation; for a float32 CPU run
their module sees a `torch` whose bfloat16 is float32, and synchronisation is a no-op. Their
text encoder and embeddings processor builders hard-code the 12B sizes and the latent layout
the 128-channel VAE, so the ledgers hand out the tiny reference modules (the weights the
checkpoint and Gemma directory hold) and the tiny latent layout is set. ltx-core fuses LoRAs
only into bf16/fp8 weights: for float32 weights it is let through the bf16 path (weight +
delta, no rounding), as in test_a2vid. The reference reads IC-LoRA's reference video with PyAV
(a placeholder here, conftest.py): its `decode_video_from_file` yields the frames our
`read_video_file` decodes, and resizes them itself. Its noiser draws each stage's noise from
one seeded generator as the latent state asks for it; our run is given the same arrays.
IC-LoRA's stage-1 latents are compared too: the LoRA and the reference tokens act there only,
and the re-noised stage 2 all but washes them out of the final latents (without the LoRA,
those move by ~1e-5 of their size).
"""


import mlx.core as mx
import numpy as np
import pytest
import torch
from pipeline_harness import (
    capturing_stage_1,
    drawing_noiser,
    frames_as_we_decode_them,
    run_reference_in_float32,
    use_tiny_text_encoder,
)
from reference import PARITY_FIGURES, assert_cosine, assert_matches, to_mx
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import base, common, ic_lora, ti2vid_one_stage, two_stage
from LTX_2_MLX.pipelines.media_io import write_video
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import ImageConditioningInput

VIDEO = dict(cfg_scale=3.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
AUDIO = dict(cfg_scale=7.0, stg_scale=1.0, rescale_scale=0.7, modality_scale=3.0, stg_blocks=[1])
PROMPT, NEGATIVE, FRAMES, FPS = "a red fox runs", "blurry", 17, 24.0
LORA_STRENGTH = 0.6
# kind -> (output size, (frame, strength) of each conditioning image)
KINDS = {
    "one-stage": (64, [(0, 1.0)]),
    "distilled": (128, [(0, 1.0)]),
    "two-stage": (128, [(0, 1.0)]),
    "keyframes": (128, [(0, 1.0), (8, 0.9), (16, 1.0)]),
    "ic-lora": (128, [(0, 1.0)]),
}
GUIDED = ("one-stage", "two-stage", "keyframes")


@pytest.fixture(scope="module")
def reference_video(tmp_path_factory):
    """IC-LoRA's reference video: 17 frames of 80x96 (resized and cropped to the stage-1 size)."""
    path = tmp_path_factory.mktemp("ic-lora") / "depth.mp4"
    y, x = np.mgrid[0:80, 0:96]
    frames = np.stack([(np.stack([x * 2 + 9 * f, y * 3, (x + y + 5 * f)], -1) % 256) for f in range(FRAMES)])
    write_video(path, [frames.astype(np.uint8)], FPS)
    return str(path)


def _reference_run(kind, model_files, monkeypatch, video_path):
    """The reference's (video, audio) latents, final and after stage 1, and the noise it drew."""
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_pipelines import distilled, keyframe_interpolation, ti2vid_two_stages
    from ltx_pipelines import ic_lora as reference_ic_lora
    from ltx_pipelines import ti2vid_one_stage as one_stage
    from ltx_pipelines.utils import media_io
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage

    checkpoint, gemma, image, upscaler, lora = map(str, model_files[:5])
    module = {"one-stage": one_stage, "distilled": distilled, "two-stage": ti2vid_two_stages,
              "keyframes": keyframe_interpolation, "ic-lora": reference_ic_lora}[kind]  # fmt: skip
    captured, noises, generator = {}, [], torch.Generator().manual_seed(123)

    original_denoise = module.denoise_audio_video
    run_reference_in_float32(monkeypatch, module)
    monkeypatch.setattr(media_io, "decode_video_from_file", frames_as_we_decode_them)
    monkeypatch.setattr(module, "GaussianNoiser", drawing_noiser(generator, noises))
    monkeypatch.setattr(module, "denoise_audio_video", capturing_stage_1(original_denoise, captured))
    original_decode = module.vae_decode_video

    def decode_capturing(latent, decoder, *args, **kwargs):
        captured["video"], decoder.decode_noise_scale = latent, 0.0
        captured["frames"] = torch.cat(list(original_decode(latent, decoder, *args, **kwargs))).numpy()
        return iter(())

    monkeypatch.setattr(module, "vae_decode_video", decode_capturing)
    monkeypatch.setattr(module, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    cpu, loras = torch.device("cpu"), [LoraPathStrengthAndSDOps(lora, LORA_STRENGTH, LTXV_LORA_COMFY_RENAMING_MAP)]
    if kind == "one-stage":
        pipeline = one_stage.TI2VidOneStagePipeline(checkpoint, gemma, loras=[], device=cpu)
    elif kind == "distilled":
        pipeline = distilled.DistilledPipeline(checkpoint, gemma, upscaler, loras=[], device=cpu)
    elif kind == "ic-lora":
        pipeline = reference_ic_lora.ICLoraPipeline(checkpoint, upscaler, gemma, loras=loras, device=cpu)
    else:
        pipeline_class = getattr(module, "KeyframeInterpolationPipeline", None) or module.TI2VidTwoStagesPipeline
        pipeline = pipeline_class(checkpoint, loras, upscaler, gemma, loras=[], device=cpu)
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    use_tiny_text_encoder(getattr(pipeline, "model_ledger", None) or pipeline.stage_1_model_ledger, gemma)
    size, frames = KINDS[kind]
    shared = dict(prompt=PROMPT, seed=1, height=size, width=size, num_frames=FRAMES, frame_rate=FPS,
                  images=[RefImage(image, frame, strength, crf=0) for frame, strength in frames])  # fmt: skip
    with torch.no_grad():
        if kind in GUIDED:
            pipeline(**shared, negative_prompt=NEGATIVE, num_inference_steps=3, video_guider_params=RefParams(**VIDEO),
                     audio_guider_params=RefParams(**AUDIO))  # fmt: skip
        elif kind == "ic-lora":
            pipeline(**shared, video_conditioning=[(video_path, 1.0)])
        else:
            pipeline(**shared)
    return (captured["video"], captured["audio"]), captured["stage 1"], noises, captured["frames"]


def _our_run(kind, model_files, monkeypatch, noises, dtype, video_path):
    captured = {}
    noiser = InjectedNoiser([to_mx(n, dtype) for n in noises])

    def capture(ledger, video, audio, *args):
        """The final latents, and the frames our decoder makes of them (decode noise off)."""
        captured.update(video=video, audio=audio)
        decoder = ledger.video_decoder()
        decoder.decode_noise_scale = 0.0
        monkeypatch.setattr(ledger, "video_decoder", lambda: decoder)
        captured["frames"] = original_decode_outputs(ledger, video, None, *args).all_frames()
        return iter(())

    original_denoise = ic_lora.denoise_stage
    monkeypatch.setattr(ic_lora, "denoise_stage", capturing_stage_1(original_denoise, captured))

    original_decode_outputs = common.decode_outputs  # base.decode_outputs may be patched by an earlier run
    monkeypatch.setattr(base, "decode_outputs", capture)
    checkpoint, gemma, image, upscaler, lora = model_files[:5]
    loras = [(str(lora), LORA_STRENGTH)]
    ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler)
    size, frames = KINDS[kind]
    images = [ImageConditioningInput(str(image), frame, strength, crf=0) for frame, strength in frames]
    shared = dict(prompt=PROMPT, seed=1, height=size, width=size, num_frames=FRAMES, frame_rate=FPS, images=images)
    guided = dict(negative_prompt=NEGATIVE, num_inference_steps=3, video_guider_params=MultiModalGuiderParams(**VIDEO),
                  audio_guider_params=MultiModalGuiderParams(**AUDIO), noiser=noiser)  # fmt: skip
    if kind == "one-stage":
        ti2vid_one_stage.TI2VidOneStagePipeline(ledger)(**shared, **guided)
    elif kind == "distilled":
        two_stage.DistilledPipeline(ledger)(**shared, noiser=noiser)
    elif kind == "two-stage":
        two_stage.TI2VidTwoStagesPipeline(ledger)(**shared, **guided, distilled_lora=loras[0])
    elif kind == "keyframes":
        two_stage.KeyframeInterpolationPipeline(ledger)(**shared, **guided, distilled_lora=loras[0])
    else:
        ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler, loras=loras)
        ic_lora.ICLoraPipeline(ledger)(**shared, video_conditioning=[(video_path, 1.0)], noiser=noiser)
    return (captured["video"], captured["audio"]), captured.get("stage 1"), captured["frames"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pipeline_matches_ltx_pipelines(kind, model_files, monkeypatch, reference_video):
    reference_final, reference_stage_1, noises, reference_frames = _reference_run(
        kind, model_files, monkeypatch, reference_video
    )
    for dtype in (mx.float32, mx.bfloat16):
        final, stage_1, frames = _our_run(kind, model_files, monkeypatch, noises, dtype, reference_video)
        _compare(kind, dtype, "", final, reference_final)
        if dtype == mx.float32:  # the decoded video, as uint8 frames: within one level
            levels = int(np.abs(frames.astype(np.int16) - reference_frames.astype(np.int16)).max())
            name = f"{kind} pipeline vs ltx-pipelines fp32: decoded frames"
            PARITY_FIGURES.append((name, "max uint8 levels", levels))
            assert frames.shape == reference_frames.shape and levels <= 1
        if kind == "ic-lora":
            _compare(kind, dtype, "stage-1 ", stage_1, reference_stage_1)


def _compare(kind, dtype, stage, latents, reference_latents):
    """fp32: max|Δ| <= 1e-4·max|ref| (the figures are ~1e-6); bf16: cosine >= 0.999."""
    for stream, latent, reference in zip(("video", "audio"), latents, reference_latents):
        what = f"ltx-pipelines fp32: {stage}{stream} latent"
        if dtype == mx.float32:
            assert_matches(f"{kind} pipeline vs {what}", latent, reference, tol=1e-4)
        else:
            assert_cosine(f"{kind} pipeline bf16 vs {what}", latent, reference)

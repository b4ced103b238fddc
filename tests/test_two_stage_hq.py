"""`--pipeline two-stage-hq` against ltx-pipelines' own TI2VidTwoStagesHQPipeline, end to end on
the tiny complete checkpoint: Gemma + connectors, image conditioning, guided res_2s at half size
on the token-count-shifted schedule with the distilled LoRA fused at 0.25, the latent upscale,
and the res_2s refinement with it fused at 0.5, from identical noise. Final video and audio
latents are compared in float32, and our bf16 run against the reference's float32 one; then
the CLI writes an mp4 with the HQ defaults.

Identical noise: both sides draw the initial noise from the same list, and res_2s's SDE noise
(substep video, substep audio, step video, step audio at every step of both stages) from one
torch generator each, seeded alike: the reference's loop gets it as its `new_noise_fn`, ours as
the pipeline's `sde_noise`.

What the reference is given in place of what it cannot run here (as in test_pipeline_parity):
it runs in float32 on the CPU (bfloat16 read as float32, its res_2s loop's model_dtype too, CUDA
synchronisation a no-op); its
text encoder and embeddings processor are the tiny ones in the files, and the tiny latent layout
is set; and ltx-core fuses LoRAs only into bf16/fp8 weights, so for float32 weights it is let
through the bf16 path (weight + delta, no rounding), as in test_a2vid.
"""

from functools import partial

import imageio_ffmpeg
import pytest
import torch
from click.testing import CliRunner
from pipeline_harness import assert_pipeline_parity, replaying_noiser, run_reference_in_float32, use_tiny_text_encoder
from reference import to_mx
from test_video_vae import LATENT_CHANNELS

from LTX_2_MLX.cli import main
from LTX_2_MLX.components.guiders import MultiModalGuiderParams
from LTX_2_MLX.components.noisers import InjectedNoiser
from LTX_2_MLX.pipelines import base, two_stage_hq
from LTX_2_MLX.pipelines.model_ledger import ModelLedger
from LTX_2_MLX.pipelines.request import ImageConditioningInput

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VIDEO = dict(cfg_scale=3.0, stg_scale=0.0, rescale_scale=0.45, modality_scale=3.0, stg_blocks=[])
AUDIO = dict(cfg_scale=7.0, stg_scale=0.0, rescale_scale=1.0, modality_scale=3.0, stg_blocks=[])
PROMPT, NEGATIVE, FRAMES, FPS, SIZE, STEPS = "a red fox runs", "blurry", 17, 24.0, 128, 3
AUDIO_TOKENS = round(FRAMES / FPS * 25)
VIDEO_TOKENS = [3 * 2 * 2, 3 * 4 * 4]  # 17 frames are 3 latent frames; half then full size


def _noises() -> list[torch.Tensor]:
    """Video then audio initial noise for each stage."""
    gen = torch.Generator().manual_seed(123)
    noises = []
    for tokens in VIDEO_TOKENS:
        noises += [torch.randn(1, tokens, LATENT_CHANNELS, generator=gen), torch.randn(1, AUDIO_TOKENS, 16, generator=gen)]
    return noises


def _sde_noise() -> torch.Generator:
    """The res_2s noise source, drawn in call order (shapes as the latent asks)."""
    return torch.Generator().manual_seed(456)


def _reference_run(model_files, monkeypatch, noises):
    from ltx_core.components.guiders import MultiModalGuiderParams as RefParams
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
    from ltx_pipelines import ti2vid_two_stages_hq as module
    from ltx_pipelines.utils.args import ImageConditioningInput as RefImage

    checkpoint, gemma, image, upscaler, lora = model_files[:5]
    captured, sde_generator = {}, _sde_noise()

    def shared_sde_noise(latent, generator):
        return torch.randn(latent.shape, generator=sde_generator)

    run_reference_in_float32(monkeypatch, module)
    monkeypatch.setattr(module, "GaussianNoiser", replaying_noiser(noises))
    monkeypatch.setattr(
        module, "res2s_audio_video_denoising_loop",
        partial(module.res2s_audio_video_denoising_loop, new_noise_fn=shared_sde_noise, model_dtype=torch.float32),
    )  # fmt: skip
    monkeypatch.setattr(module, "vae_decode_video", lambda latent, *a, **k: captured.setdefault("video", latent))
    monkeypatch.setattr(module, "vae_decode_audio", lambda latent, *a, **k: captured.setdefault("audio", latent))
    cpu = torch.device("cpu")
    pipeline = module.TI2VidTwoStagesHQPipeline(
        str(checkpoint), [LoraPathStrengthAndSDOps(str(lora), 1.0, LTXV_LORA_COMFY_RENAMING_MAP)], 0.25, 0.5,
        str(upscaler), str(gemma), loras=(), device=cpu,
    )  # fmt: skip
    pipeline.pipeline_components.video_latent_channels = LATENT_CHANNELS
    use_tiny_text_encoder(pipeline.stage_1_model_ledger, gemma)
    with torch.no_grad():
        pipeline(
            prompt=PROMPT, negative_prompt=NEGATIVE, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
            num_inference_steps=STEPS, video_guider_params=RefParams(**VIDEO), audio_guider_params=RefParams(**AUDIO),
            images=[RefImage(str(image), 0, 1.0, crf=0)],
        )  # fmt: skip
    return captured["video"], captured["audio"]


def _our_run(model_files, monkeypatch, noises, dtype):
    checkpoint, gemma, image, upscaler, lora = model_files[:5]
    captured, sde_generator = {}, _sde_noise()

    def capture(ledger, video, audio, *args):
        captured.update(video=video, audio=audio)

    def sde_noise(latent):
        return to_mx(torch.randn(tuple(latent.shape), generator=sde_generator))

    monkeypatch.setattr(base, "decode_outputs", capture)
    ledger = ModelLedger(checkpoint, gemma, dtype=dtype, spatial_upscaler_path=upscaler)
    two_stage_hq.TI2VidTwoStagesHQPipeline(ledger, sde_noise=sde_noise)(
        prompt=PROMPT, negative_prompt=NEGATIVE, seed=1, height=SIZE, width=SIZE, num_frames=FRAMES, frame_rate=FPS,
        num_inference_steps=STEPS, video_guider_params=MultiModalGuiderParams(**VIDEO),
        audio_guider_params=MultiModalGuiderParams(**AUDIO), images=[ImageConditioningInput(str(image), 0, 1.0, crf=0)],
        noiser=InjectedNoiser([to_mx(n, dtype) for n in noises]), distilled_lora=(str(lora), 0.5),
        distilled_lora_strength_stage_1=0.25,
    )  # fmt: skip
    return captured["video"], captured["audio"]


def test_two_stage_hq_matches_ltx_pipelines(model_files, monkeypatch):
    noises = _noises()
    reference_latents = _reference_run(model_files, monkeypatch, noises)
    run = partial(_our_run, model_files, monkeypatch, noises)
    assert_pipeline_parity("two-stage-hq pipeline", reference_latents, run, tol=1e-4)


def test_cli_writes_video_with_hq_pipeline(model_files, tmp_path):
    checkpoint, gemma, _, upscaler, lora = model_files[:5]
    output = tmp_path / "fox.mp4"
    args = ["generate", "--pipeline", "two-stage-hq", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma),
            "--prompt", PROMPT, "--output-path", str(output), "--height", "128", "--width", "128",
            "--num-frames", "9", "--num-inference-steps", "2", "--dtype", "float32", "--no-tiled-decode",
            "--spatial-upscaler-path", str(upscaler), "--distilled-lora", str(lora), "0.5",
            "--distilled-lora-strength-stage-1", "0.25"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (128, 128) and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 9


def test_hq_defaults_are_the_references():
    """The CLI's defaults for two-stage-hq are ltx-pipelines' LTX_2_3_HQ_PARAMS at full size."""
    from ltx_pipelines.utils.constants import LTX_2_3_HQ_PARAMS as REFERENCE

    from LTX_2_MLX.pipelines.registry import PIPELINES

    ours = PIPELINES["two-stage-hq"].defaults
    assert ours.size(two_stage=True) == (REFERENCE.stage_2_height, REFERENCE.stage_2_width)
    assert (ours.num_inference_steps, ours.num_frames, ours.frame_rate, ours.seed) == (
        REFERENCE.num_inference_steps, REFERENCE.num_frames, REFERENCE.frame_rate, REFERENCE.seed
    )  # fmt: skip
    for mine, theirs in ((ours.video_guider_params, REFERENCE.video_guider_params),
                         (ours.audio_guider_params, REFERENCE.audio_guider_params)):  # fmt: skip
        assert vars(mine) == vars(theirs)

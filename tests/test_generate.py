"""`ltx2-mlx generate` end to end on a tiny but complete LTX-2.3-layout checkpoint (DiT, video
VAE, audio VAE, vocoder, text projection and connectors in one file) and a tiny Gemma 3
directory: the whole composition runs and writes an mp4 with audio. The numbers of each part
are checked against the reference by the component tests."""

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from LTX_2_MLX.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _generate(model_files, output, *extra):
    checkpoint, gemma = model_files[:2]
    args = ["generate", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma), "--prompt", "a red fox runs",
            "--output-path", str(output), "--height", "64", "--width", "64", "--num-frames", "9",
            "--dtype", "float32", "--no-tiled-decode", *extra]  # fmt: skip
    if not {"distilled", "ic-lora"} & set(extra):
        args += ["--num-inference-steps", "2"]  # the unguided pipelines have a fixed schedule
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_generate_writes_video_with_audio(model_files, tmp_path):
    import imageio_ffmpeg

    output = tmp_path / "fox.mp4"
    result = _generate(model_files, output, "--image", str(model_files[2]), "0", "1.0", "--seed", "3")
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (64, 64) and meta["audio_codec"] == "aac"
    frames = [np.frombuffer(f, np.uint8) for f in reader]
    assert len(frames) == 9 and np.std(np.stack(frames)) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.mp4"]


def test_generate_is_deterministic_for_a_seed(model_files, tmp_path):
    import mlx.core as mx

    from LTX_2_MLX.pipelines.model_ledger import ModelLedger
    from LTX_2_MLX.pipelines.request import LTX_2_PARAMS
    from LTX_2_MLX.pipelines.ti2vid_one_stage import TI2VidOneStagePipeline

    checkpoint, gemma = model_files[:2]
    pipeline = TI2VidOneStagePipeline(ModelLedger(checkpoint, gemma, dtype=mx.float32))
    runs = [
        pipeline(
            prompt="a red fox", negative_prompt="blurry", seed=7, height=64, width=64, num_frames=9, frame_rate=24.0,
            num_inference_steps=2, video_guider_params=LTX_2_PARAMS.video_guider_params,
            audio_guider_params=LTX_2_PARAMS.audio_guider_params,
        )  # fmt: skip
        for _ in range(2)
    ]
    first, second = ([np.concatenate(list(r.frames)), r.audio[0]] for r in runs)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[0].shape == (9, 64, 64, 3) and first[1].ndim == 2


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--num-frames", "10", "num_frames=10 must be 8k+1, e.g. 9"),
    ("--height", "100", "multiples of 32"),
])  # fmt: skip
def test_generate_refuses_bad_sizes_and_writes_nothing(model_files, tmp_path, option, value, message):
    output = tmp_path / "bad.mp4"
    result = _generate(model_files, output, option, value)
    assert result.exit_code != 0 and message in result.output
    assert not output.exists()


@pytest.mark.parametrize("pipeline", ["two-stage", "distilled", "keyframes"])
def test_two_stage_pipelines_write_full_size_video(model_files, tmp_path, pipeline):
    import imageio_ffmpeg

    image, upscaler, lora = model_files[2:5]
    output = tmp_path / f"{pipeline}.mp4"
    extra = ["--pipeline", pipeline, "--spatial-upscaler-path", str(upscaler), "--height", "128", "--width", "128",
             "--image", str(image), "0", "0.9"]  # fmt: skip
    if pipeline in ("two-stage", "keyframes"):
        extra += ["--distilled-lora", str(lora), "0.6"]
    if pipeline == "keyframes":
        extra += ["--image", str(image), "8", "1.0"]
    result = _generate(model_files, output, *extra)
    assert result.exit_code == 0, result.output
    reader = imageio_ffmpeg.read_frames(str(output))
    meta = next(reader)
    assert tuple(meta["size"]) == (128, 128) and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 9


def test_two_stage_needs_its_files(model_files, tmp_path):
    result = _generate(model_files, tmp_path / "x.mp4", "--pipeline", "distilled", "--height", "128", "--width", "128")
    assert result.exit_code != 0 and "--spatial-upscaler-path" in result.output
    result = _generate(model_files, tmp_path / "x.mp4", "--pipeline", "two-stage", "--height", "96", "--width", "128")
    assert result.exit_code != 0 and "multiples of 64" in result.output


def test_first_image_replaces_the_latent_unless_interpolating(model_files):
    import mlx.core as mx

    from LTX_2_MLX.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
    from LTX_2_MLX.pipelines.common import image_conditionings
    from LTX_2_MLX.pipelines.model_ledger import ModelLedger
    from LTX_2_MLX.pipelines.request import ImageConditioningInput

    checkpoint, gemma, image = model_files[:3]
    encoder = ModelLedger(checkpoint, gemma, dtype=mx.float32).video_encoder()
    images = [ImageConditioningInput(str(image), 0), ImageConditioningInput(str(image), 8, 0.5)]
    kinds = [type(c) for c in image_conditionings(images, 64, 64, encoder, mx.float32)]
    assert kinds == [VideoConditionByLatentIndex, VideoConditionByKeyframeIndex]
    kinds = [type(c) for c in image_conditionings(images, 64, 64, encoder, mx.float32, all_as_keyframes=True)]
    assert kinds == [VideoConditionByKeyframeIndex, VideoConditionByKeyframeIndex]


def test_ic_lora_pipeline_follows_a_reference_video(model_files, tmp_path):
    """The IC-LoRA's metadata halves the reference: at 128x128 output, stage 1 runs at 64x64
    and the reference video is encoded at 32x32."""
    import imageio_ffmpeg
    from safetensors.torch import save_file

    from LTX_2_MLX.pipelines.media_io import write_video

    _, _, _, upscaler, lora, folder = model_files
    reference = write_video(tmp_path / "pose.mp4", [np.random.RandomState(1).randint(0, 255, (12, 48, 40, 3), np.uint8)], 24)
    ic_lora = tmp_path / "ic-lora.safetensors"
    save_file(load_file(lora), str(ic_lora), metadata={"reference_downscale_factor": "2"})
    output = tmp_path / "ic.mp4"
    result = _generate(model_files, output, "--pipeline", "ic-lora", "--spatial-upscaler-path", str(upscaler),
                       "--height", "128", "--width", "128", "--lora", str(ic_lora), "1.0",
                       "--video-conditioning", str(reference), "1.0", "--conditioning-attention-strength", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = next(imageio_ffmpeg.read_frames(str(output)))
    assert tuple(meta["size"]) == (128, 128)


def test_conditioning_video_is_cut_to_8k_plus_1_frames(tmp_path):
    from LTX_2_MLX.pipelines.media_io import load_video_conditioning, write_video

    clip = write_video(tmp_path / "c.mp4", [np.full((12, 32, 48, 3), 255, np.uint8)], 24)
    video = load_video_conditioning(clip, 32, 32, frame_cap=100)
    assert video.shape == (1, 3, 9, 32, 32) and float(video.min()) > 0.9
    assert load_video_conditioning(clip, 32, 32, frame_cap=1).shape[2] == 1


def test_generate_from_saved_embeddings_equals_generate_with_gemma(model_files, tmp_path):
    import imageio_ffmpeg

    checkpoint, gemma = model_files[:2]
    files = {}
    for name, text in (("prompt", "a red fox runs"), ("negative", "blurry")):
        files[name] = tmp_path / f"{name}.safetensors"
        result = CliRunner().invoke(main, ["encode-prompt", "--checkpoint-path", checkpoint, "--gemma-path", str(gemma),
                                           "--prompt", text, "--output-path", str(files[name]), "--dtype", "float32"])
        assert result.exit_code == 0, result.output
    with_gemma, stored = tmp_path / "gemma.mp4", tmp_path / "stored.mp4"
    assert _generate(model_files, with_gemma, "--negative-prompt", "blurry", "--seed", "5").exit_code == 0
    args = ["generate", "--checkpoint-path", checkpoint, "--embedding", str(files["prompt"]),
            "--negative-embedding", str(files["negative"]), "--output-path", str(stored), "--height", "64", "--width",
            "64", "--num-frames", "9", "--num-inference-steps", "2", "--dtype", "float32", "--no-tiled-decode",
            "--seed", "5"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    frames = [list(imageio_ffmpeg.read_frames(str(path)))[1:] for path in (with_gemma, stored)]
    assert frames[0] == frames[1]


def test_generate_without_gemma_needs_both_embeddings(model_files, tmp_path):
    result = CliRunner().invoke(main, ["generate", "--checkpoint-path", model_files[0], "--prompt", "x",
                                       "--output-path", str(tmp_path / "x.mp4")])  # fmt: skip
    assert result.exit_code != 0 and "--gemma-path is required" in result.output


def test_generate_refuses_a_model_that_would_not_fit(model_files, tmp_path, monkeypatch):
    import LTX_2_MLX.cli.generate as cli

    monkeypatch.setattr(cli, "memory_budget_bytes", lambda: 1024)
    output = tmp_path / "big.mp4"
    result = _generate(model_files, output)
    assert result.exit_code != 0 and "use a machine with more memory" in result.output and "MiB" in result.output
    assert not output.exists()
    monkeypatch.setattr(cli, "memory_budget_bytes", lambda: 1024**3)  # 1 GiB: enough for the tiny DiT
    assert _generate(model_files, output).exit_code == 0


def test_no_audio_writes_a_silent_video_from_the_video_stream_alone(model_files, tmp_path, monkeypatch):
    import imageio_ffmpeg

    from LTX_2_MLX.model.transformer import LTXModel

    calls = []
    original = LTXModel._arguments  # where every pass's modalities enter the DiT

    def recording(self, video, audio, perturbations):
        calls.append(audio)
        return original(self, video, audio, perturbations)

    monkeypatch.setattr(LTXModel, "_arguments", recording)
    output = tmp_path / "silent.mp4"
    result = _generate(model_files, output, "--no-audio")
    assert result.exit_code == 0, result.output
    assert calls and all(audio is None for audio in calls)  # no audio tokens ever reach the DiT
    meta = next(imageio_ffmpeg.read_frames(str(output)))
    assert meta.get("audio_codec") is None and tuple(meta["size"]) == (64, 64)


def test_options_reach_the_request(model_files, tmp_path, monkeypatch):
    """Guidance, image CRF and LoRA strengths as the reference parses them (a LoRA's strength
    defaults to 1.0); every guidance option not given keeps the checkpoint version's default."""
    from LTX_2_MLX.pipelines.registry import PIPELINES
    from LTX_2_MLX.pipelines.request import detect_params

    seen = {}

    def capture(self, request, noiser):
        seen.update(request=request, loras=self.ledger.loras)
        raise KeyboardInterrupt  # stop before anything loads; leaves no file

    monkeypatch.setattr(PIPELINES["one-stage"], "generate", capture)
    _generate(model_files, tmp_path / "x.mp4", "--video-cfg-guidance-scale", "4.5", "--video-stg-blocks", "0", "1",
              "--a2v-guidance-scale", "2", "--audio-skip-step", "1", "--v2a-guidance-scale", "1.5",
              "--audio-rescale-scale", "0", "--image", str(model_files[2]), "0", "0.8", "20",
              "--image", str(model_files[2]), "8", "1", "--lora", str(model_files[4]))  # fmt: skip
    request = seen["request"]
    video, audio = request.video_guider_params, request.audio_guider_params
    assert (video.cfg_scale, video.stg_blocks, video.modality_scale) == (4.5, [0, 1], 2.0)
    assert (audio.skip_step, audio.modality_scale, audio.rescale_scale) == (1, 1.5, 0.0)
    reference = detect_params(model_files[0]).video_guider_params
    assert (video.stg_scale, video.rescale_scale, video.skip_step) == (
        reference.stg_scale, reference.rescale_scale, reference.skip_step)
    assert [(i.frame_idx, i.strength, i.crf) for i in request.images] == [(0, 0.8, 20), (8, 1.0, 33)]
    assert seen["loras"] == [(str(model_files[4]), 1.0)]
    assert list(tmp_path.iterdir()) == []


def test_low_memory_writes_the_same_video(model_files, tmp_path):
    """--low-memory streams the DiT's blocks and Gemma's layers from their files; --eval-blocks
    bounds each evaluation; the video is the same as with everything resident."""
    import imageio_ffmpeg

    videos = []
    for name, extra in (("resident.mp4", ()), ("streamed.mp4", ("--low-memory", "--eval-blocks", "1"))):
        result = _generate(model_files, tmp_path / name, "--seed", "5", *extra)
        assert result.exit_code == 0, result.output
        reader = imageio_ffmpeg.read_frames(str(tmp_path / name))
        next(reader)
        videos.append(np.stack([np.frombuffer(frame, np.uint8) for frame in reader]))
    assert np.array_equal(videos[0], videos[1])


def test_enhancing_a_streamed_run_says_what_it_costs(model_files, tmp_path):
    """Streamed, Gemma is read once per generated token: the command says so before loading."""
    streamed = _generate(model_files, tmp_path / "a.mp4", "--dry-run", "--enhance-prompt", "--low-memory")
    assert streamed.exit_code == 0, streamed.output
    assert "for every token it writes" in streamed.stderr
    resident = _generate(model_files, tmp_path / "b.mp4", "--dry-run", "--enhance-prompt")
    assert resident.exit_code == 0, resident.output
    assert "for every token it writes" not in resident.stderr


def test_dry_run_prints_the_plan_and_loads_nothing(model_files, tmp_path, monkeypatch):
    import mlx.core as mx

    def no_load(*args, **kwargs):
        raise AssertionError("--dry-run loaded a model")

    monkeypatch.setattr(mx, "load", no_load)
    result = _generate(model_files, tmp_path / "plan.mp4", "--dry-run", "--memory-budget", "4")
    assert result.exit_code == 0, result.output
    assert "DiT" in result.stdout and "VAE decode" in result.stdout and "of a 4.00 GiB budget: fits" in result.stdout
    assert list(tmp_path.iterdir()) == []

"""The bad-input catalogue: every way a user can get an `ltx2-mlx` command wrong, each one row.

For every row the command must exit non-zero with ONE line on stderr that starts with
`error:` and names the fix, print no traceback, leave no file behind, leave every input file
byte-for-byte as it was, and (for everything checked up front) load no model: `mx.load`, the
only way weights are read, raises if it is called.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from reference import REFUSALS, save_checkpoint

from LTX_2_MLX.cli import main
from LTX_2_MLX.pipelines.media_io import write_video


@pytest.fixture(scope="module")
def files(model_files, tmp_path_factory):
    """The tiny model files plus the wrong files users pass by mistake."""
    checkpoint, gemma, image, upscaler, lora, _ = model_files
    folder = tmp_path_factory.mktemp("bad-input")
    text = folder / "notes.txt"
    text.write_text("not a model")
    fake_image = folder / "photo.png"
    fake_image.write_text("not an image")
    fake_video = folder / "clip.mp4"
    fake_video.write_text("not a video")
    video = write_video(folder / "pose.mp4", [np.random.RandomState(1).randint(0, 255, (9, 32, 32, 3), np.uint8)], 24)
    clip_10_frames = write_video(folder / "ten-frames.mp4", [np.zeros((10, 32, 32, 3), np.uint8)], 24)
    clip_48x32 = write_video(folder / "wide.mp4", [np.zeros((9, 32, 48, 3), np.uint8)], 24)
    wrong_lora = save_checkpoint(folder / "other-model-lora.safetensors", {
        "diffusion_model.transformer_blocks.0.attn9.to_q.lora_A.weight": torch.zeros(4, 32),
        "diffusion_model.transformer_blocks.0.attn9.to_q.lora_B.weight": torch.zeros(32, 4),
    }, None)  # fmt: skip
    gemma_without_config = folder / "gemma-incomplete"
    gemma_without_config.mkdir()
    (gemma_without_config / "tokenizer.json").write_text("{}")
    hardlink = folder / "hardlink.safetensors"
    os.link(checkpoint, hardlink)
    symlink = folder / "symlink.safetensors"
    symlink.symlink_to(checkpoint)
    audio = folder / "voice.wav"  # 1 s of stereo 16-bit noise at 16 kHz
    with wave.open(str(audio), "wb") as f:
        f.setnchannels(2), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes(np.random.RandomState(2).randint(-3000, 3000, (16000, 2)).astype(np.int16).tobytes())
    return {
        "checkpoint": checkpoint, "gemma": str(gemma), "image": str(image), "upscaler": str(upscaler),
        "lora": str(lora), "text": str(text), "fake_image": str(fake_image), "fake_video": str(fake_video),
        "wrong_lora": wrong_lora, "gemma_incomplete": str(gemma_without_config), "hardlink": str(hardlink),
        "symlink": str(symlink), "folder": folder, "video": str(video), "clip_10_frames": str(clip_10_frames), "clip_48x32": str(clip_48x32), "audio": str(audio),
    }  # fmt: skip


@pytest.fixture(scope="module")
def quantized(files, tmp_path_factory):
    """The tiny checkpoint quantized to int8 by `ltx2-mlx quantize`."""
    path = tmp_path_factory.mktemp("quantized") / "tiny-int8.safetensors"
    result = CliRunner().invoke(main, ["quantize", files["checkpoint"], str(path), "--mode", "int8"])
    assert result.exit_code == 0, result.output
    return str(path)


def _generate_args(files, out):
    return ["generate", "--checkpoint-path", files["checkpoint"], "--gemma-path", files["gemma"],
            "--prompt", "a red fox runs", "--output-path", out, "--height", "64", "--width", "64",
            "--num-frames", "9", "--num-inference-steps", "2", "--dtype", "float32"]  # fmt: skip


def _with(args: list[str], option: str, *values: str) -> list[str]:
    """`args` with `option`'s values replaced (or the option added)."""
    args = list(args)
    if option in args:
        index = args.index(option)
        del args[index : index + 1 + len(values)]
    return args + [option, *values]


def _without(args: list[str], option: str, count: int = 1) -> list[str]:
    args = list(args)
    index = args.index(option)
    del args[index : index + 1 + count]
    return args


# (id, how to change the good `generate` arguments, message fragment)
GENERATE_CASES = [
    ("negative seed", lambda a, f: _with(a, "--seed", "-1"), "'--seed': -1 is not in the range 0<=x<=18446744073709551615"),
    ("seed over 2**64-1", lambda a, f: _with(a, "--seed", str(2**64)), "is not in the range 0<=x<=18446744073709551615"),
    ("zero width", lambda a, f: _with(a, "--width", "0"), "'--width': 0 is not in the range x>=1"),
    ("zero height", lambda a, f: _with(a, "--height", "0"), "'--height': 0 is not in the range x>=1"),
    ("zero frames", lambda a, f: _with(a, "--num-frames", "0"), "'--num-frames': 0 is not in the range x>=1"),
    ("frames not 8k+1", lambda a, f: _with(a, "--num-frames", "10"), "num_frames=10 must be 8k+1, e.g. 9"),
    ("width not a multiple of 32", lambda a, f: _with(a, "--width", "100"), "both must be positive multiples of 32"),
    ("two-stage width not a multiple of 64", lambda a, f: _with(a, "--pipeline", "two-stage") + ["--width", "96"],
     "multiples of 64"),
    ("zero steps", lambda a, f: _with(a, "--num-inference-steps", "0"), "'--num-inference-steps': 0 is not in the range x>=1"),
    ("negative steps", lambda a, f: _with(a, "--num-inference-steps", "-3"), "is not in the range x>=1"),
    ("zero frame rate", lambda a, f: _with(a, "--frame-rate", "0"), "'--frame-rate': 0.0 must be a positive number"),
    ("negative frame rate", lambda a, f: _with(a, "--frame-rate", "-24"), "must be a positive number"),
    ("nan frame rate", lambda a, f: _with(a, "--frame-rate", "nan"), "must be a positive number"),
    ("zero memory budget", lambda a, f: a + ["--memory-budget", "0"], "'--memory-budget': 0.0 must be a positive number"),
    ("negative memory budget", lambda a, f: a + ["--memory-budget", "-8"], "must be a positive number"),
    ("nan memory budget", lambda a, f: a + ["--memory-budget", "nan"], "must be a positive number"),
    ("memory budget not a number", lambda a, f: a + ["--memory-budget", "8GB"], "'8GB' is not a valid float"),
    ("memory budget too small", lambda a, f: a + ["--memory-budget", "1e-6"], "nothing smaller fits this budget"),
    ("zero blocks per evaluation", lambda a, f: a + ["--eval-blocks", "0"], "0 is not in the range x>=1"),
    ("empty prompt", lambda a, f: _with(a, "--prompt", ""), "'--prompt': is empty; describe what to generate"),
    ("blank prompt", lambda a, f: _with(a, "--prompt", "   "), "is empty"),
    ("no prompt", lambda a, f: _without(a, "--prompt"), "give --prompt"),
    ("prompt and embedding", lambda a, f: a + ["--embedding", f["lora"]], "give --prompt or --embedding, not both"),
    ("missing image", lambda a, f: a + ["--image", "nope.png", "0", "1"], "nope.png: no such file"),
    ("image that is not an image", lambda a, f: a + ["--image", f["fake_image"], "0", "1"],
     "cannot read the conditioning image"),
    ("image strength above 1", lambda a, f: a + ["--image", f["image"], "0", "1.5"], "strength 1.5 must be in [0, 1]"),
    ("image strength below 0", lambda a, f: a + ["--image", f["image"], "0", "-0.1"], "strength -0.1 must be in [0, 1]"),
    ("image frame past the end", lambda a, f: a + ["--image", f["image"], "9", "1"], "the frame must be in [0, 8]"),
    ("missing LoRA", lambda a, f: a + ["--lora", "nope.safetensors", "1"], "nope.safetensors: no such file"),
    ("LoRA that is not safetensors", lambda a, f: a + ["--lora", f["text"], "1"], "not a safetensors file"),
    ("LoRA that is a model checkpoint", lambda a, f: a + ["--lora", f["upscaler"], "1"], "LoRA"),
    ("LoRA for another model", lambda a, f: a + ["--lora", f["wrong_lora"], "1"], "attn9"),
    ("LoRA with int8 quantization", lambda a, f: a + ["--lora", f["lora"], "1", "--quantization", "int8"],
     "LoRAs cannot be fused into int8/int4 weights"),
    ("embedding that is not embeddings", lambda a, f: _without(a, "--prompt") + ["--embedding", f["lora"]],
     "not a prompt-embeddings file"),
    ("enhance an embedding", lambda a, f: _without(a, "--prompt") + ["--embedding", f["lora"], "--enhance-prompt"],
     "--enhance-prompt rewrites the prompt text"),
    ("output not a video", lambda a, f: _with(a, "--output-path", str(f["folder"] / "out.txt")), "must end in .mp4"),
    ("output in a missing folder", lambda a, f: _with(a, "--output-path", str(f["folder"] / "no" / "out.mp4")),
     "does not exist; create it first"),
    ("output is a folder", lambda a, f: _with(a, "--output-path", str(f["folder"])), "is a directory"),
    ("output replaces an input", lambda a, f: _ic_lora_onto_input(a, f), "refusing to overwrite it"),
    ("missing checkpoint", lambda a, f: _with(a, "--checkpoint-path", "nope.safetensors"), "no such file"),
    ("checkpoint not safetensors", lambda a, f: _with(a, "--checkpoint-path", f["text"]), "not a safetensors file"),
    ("upscaler as checkpoint", lambda a, f: _with(a, "--checkpoint-path", f["upscaler"]), "no 'transformer' section"),
    ("checkpoint as upscaler", lambda a, f: _without(a, "--num-inference-steps") + ["--pipeline", "distilled", "--spatial-upscaler-path", f["checkpoint"],
                                                 "--height", "128", "--width", "128"], "pass a latent upscaler file"),
    ("missing Gemma folder", lambda a, f: _with(a, "--gemma-path", "no-gemma"), "no such directory"),
    ("Gemma folder without config", lambda a, f: _with(a, "--gemma-path", f["gemma_incomplete"]), "no config.json"),
    ("two-stage without distilled LoRA", lambda a, f: a + ["--pipeline", "two-stage", "--spatial-upscaler-path",
                                                           f["upscaler"], "--height", "128", "--width", "128"],
     "add --distilled-lora FILE 0.6"),
    ("stage-1 LoRA strength on two-stage", lambda a, f: a + ["--distilled-lora-strength-stage-1", "0.3"],
     "does not use --distilled-lora-strength-stage-1"),
    ("two-stage-hq without distilled LoRA", lambda a, f: a + ["--pipeline", "two-stage-hq", "--spatial-upscaler-path",
                                                              f["upscaler"], "--height", "128", "--width", "128"],
     "add --distilled-lora FILE 0.6"),
    ("distilled without upscaler", lambda a, f: _without(a, "--num-inference-steps") + [
        "--pipeline", "distilled", "--height", "128", "--width", "128"], "add --spatial-upscaler-path FILE"),
    ("keyframes with one image", lambda a, f: a + ["--pipeline", "keyframes", "--spatial-upscaler-path", f["upscaler"],
                                                   "--distilled-lora", f["lora"], "0.6", "--height", "128", "--width",
                                                   "128", "--image", f["image"], "0", "1"], "at least 2 images"),
    ("ic-lora without reference video", lambda a, f: _without(a, "--num-inference-steps") + [
        "--pipeline", "ic-lora", "--spatial-upscaler-path", f["upscaler"], "--lora", f["lora"], "1", "--height", "128",
        "--width", "128"], "add --video-conditioning FILE 1.0"),
    ("reference video that is not a video", lambda a, f: _without(a, "--num-inference-steps") + [
        "--pipeline", "ic-lora", "--spatial-upscaler-path", f["upscaler"], "--lora", f["lora"], "1", "--height", "128",
        "--width", "128", "--video-conditioning", f["fake_video"], "1"], "cannot read it as a video"),
    ("attention strength above 1", lambda a, f: a + ["--conditioning-attention-strength", "2"], "0.0<=x<=1.0"),
    ("distilled LoRA on one-stage", lambda a, f: a + ["--distilled-lora", f["lora"], "0.6"],
     "does not use --distilled-lora"),
    ("steps on an unguided pipeline", lambda a, f: a + ["--pipeline", "distilled", "--spatial-upscaler-path",
                                                        f["upscaler"], "--height", "128", "--width", "128"],
     "fixed distilled schedule"),
    ("unknown pipeline", lambda a, f: a + ["--pipeline", "three-stage"], "'--pipeline': 'three-stage' is not one of"),
    ("a2vid without audio", lambda a, f: _a2vid(a, f), "add --audio-path FILE"),
    ("a2vid missing audio file", lambda a, f: _a2vid(a, f, "--audio-path", "nope.wav"), "'nope.wav' does not exist"),
    ("a2vid audio that is not audio", lambda a, f: _a2vid(a, f, "--audio-path", f["text"]), "cannot read audio from it"),
    ("a2vid video without sound", lambda a, f: _a2vid(a, f, "--audio-path", f["video"]), "it has no audio stream"),
    ("a2vid negative audio start", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"], "--audio-start-time", "-1"),
     "'--audio-start-time': -1.0 is not in the range x>=0.0"),
    ("a2vid zero audio duration", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"], "--audio-max-duration", "0"),
     "'--audio-max-duration': 0.0 must be a positive number"),
    ("a2vid audio start past the end", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"], "--audio-start-time", "3"),
     "past the end"),
    ("a2vid audio shorter than the video", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"],
                                                             "--audio-start-time", "0.9"), "give longer audio"),
    ("a2vid audio cut shorter than the video", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"],
                                                                 "--audio-max-duration", "0.1"), "cut by --audio-max-duration"),
    ("audio on a pipeline without it", lambda a, f: a + ["--audio-path", f["audio"]], "does not use --audio-path"),
    ("audio start without audio", lambda a, f: a + ["--audio-start-time", "1"], "does not use --audio-start-time"),
    ("retake without a clip", lambda a, f: _retake(a, f), "add --video-path FILE --start-time S --end-time S"),
    ("retake without a time range", lambda a, f: _retake(a, f, "--video-path", f["video"]), "add --start-time S --end-time S"),
    ("retake clip that is not a video", lambda a, f: _retake(a, f, "--video-path", f["fake_video"], "--start-time", "0",
                                                              "--end-time", "0.1"), "cannot read it as a video"),
    ("retake clip of 10 frames", lambda a, f: _retake(a, f, "--video-path", f["clip_10_frames"], "--start-time", "0",
                                                       "--end-time", "0.1"), "must be 8k+1 frames: cut it to 9"),
    ("retake clip of 48x32", lambda a, f: _retake(a, f, "--video-path", f["clip_48x32"], "--start-time", "0",
                                                   "--end-time", "0.1"), "multiples of 32: crop it, e.g. to 32x32"),
    ("retake range past the clip's end", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0.1",
                                                               "--end-time", "2"), "0 <= start < end <= 0.375 s"),
    ("retake range reversed", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0.3",
                                                    "--end-time", "0.1"), "the range to regenerate must satisfy"),
    ("retake negative start", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "-1",
                                                    "--end-time", "0.1"), "the range to regenerate must satisfy"),
    ("retake with a size", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0",
                                                 "--end-time", "0.1", "--width", "64"), "keeps the clip's size"),
    ("retake keeping both streams", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0",
                                                          "--end-time", "0.1", "--keep-video", "--keep-audio"),
     "regenerates nothing"),
    ("retake with an image", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0",
                                                   "--end-time", "0.1", "--image", f["image"], "0", "1"),
     "does not use --image"),
    ("retake onto its clip", lambda a, f: _with(_retake(a, f, "--video-path", f["video"], "--start-time", "0",
                                                         "--end-time", "0.1"), "--output-path", f["video"]),
     "refusing to overwrite it"),
    ("clip on another pipeline", lambda a, f: a + ["--video-path", f["video"]], "does not use --video-path"),
    ("time range on another pipeline", lambda a, f: a + ["--start-time", "0", "--end-time", "0.1"],
     "does not use --start-time/--end-time"),
    ("extend without a clip", lambda a, f: _extend(a, f), "add --video-path FILE --extend-frames N"),
    ("extend without frames", lambda a, f: _extend(a, f, "--video-path", f["video"]),
     "--extend-frames 0: add a positive multiple of 8 frames"),
    ("extend by 5 frames", lambda a, f: _extend(a, f, "--video-path", f["video"], "--extend-frames", "5"),
     "--extend-frames 5: add a positive multiple of 8 frames (one latent frame is 8 frames), e.g. 8"),
    ("extend with a time range", lambda a, f: _extend(a, f, "--video-path", f["video"], "--extend-frames", "8",
                                                      "--start-time", "0", "--end-time", "0.1"),
     "--pipeline extend does not use --start-time/--end-time"),
    ("extend frames on retake", lambda a, f: _retake(a, f, "--video-path", f["video"], "--start-time", "0",
                                                     "--end-time", "0.1", "--extend-frames", "8"),
     "--pipeline retake does not use --extend-frames"),
    ("guidance on an unguided pipeline", lambda a, f: _without(a, "--num-inference-steps") + [
        "--pipeline", "distilled", "--spatial-upscaler-path", f["upscaler"], "--height", "128", "--width", "128",
        "--video-cfg-guidance-scale", "4"], "--pipeline distilled is unguided: drop --video-cfg-guidance-scale"),
    ("audio guidance without audio", lambda a, f: a + ["--no-audio", "--audio-cfg-guidance-scale", "5"],
     "--no-audio generates no audio: drop --audio-cfg-guidance-scale"),
    ("audio guidance on a2vid", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"], "--v2a-guidance-scale", "2"),
     "--pipeline a2vid takes the audio as given: drop --v2a-guidance-scale"),
    ("STG block past the last", lambda a, f: a + ["--video-stg-blocks", "0", "7"],
     "--video-stg-blocks 7: this transformer has blocks 0 to 1"),
    ("STG block not a number", lambda a, f: a + ["--audio-stg-blocks", "last"], "block 'last' is not a number"),
    ("rescale above 1", lambda a, f: a + ["--video-rescale-scale", "1.5"], "1.5 must be in [0, 1]"),
    ("infinite CFG", lambda a, f: a + ["--audio-cfg-guidance-scale", "inf"], "inf must be a finite number"),
    ("image CRF above 51", lambda a, f: a + ["--image", f["image"], "0", "1", "60"], "CRF 60 must be in [0, 51]"),
    ("image with two values", lambda a, f: a + ["--image", f["image"], "0"],
     "takes PATH FRAME STRENGTH [CRF], got"),
    ("LoRA strength not a number", lambda a, f: a + ["--lora", f["lora"], "strong"], "strength 'strong' is not a number"),
    ("distilled LoRA twice", lambda a, f: a + ["--pipeline", "two-stage", "--spatial-upscaler-path", f["upscaler"],
                                               "--distilled-lora", f["lora"], "--distilled-lora", f["lora"], "0.5",
                                               "--height", "128", "--width", "128"], "give it once"),
    ("stage-2 LoRA strength on two-stage", lambda a, f: a + ["--pipeline", "two-stage", "--spatial-upscaler-path",
        f["upscaler"], "--distilled-lora", f["lora"], "--distilled-lora-strength-stage-2", "0.4", "--height", "128",
        "--width", "128"], "--pipeline two-stage does not use --distilled-lora-strength-stage-2"),
    ("no audio on a2vid", lambda a, f: _a2vid(a, f, "--audio-path", f["audio"], "--no-audio"),
     "--pipeline a2vid does not use --no-audio"),
    ("skip stage 2 on one-stage", lambda a, f: a + ["--skip-stage-2"], "--pipeline one-stage does not use --skip-stage-2"),
    ("attention mask on one-stage", lambda a, f: a + ["--conditioning-attention-mask", f["video"], "0.5"],
     "--pipeline one-stage does not use --conditioning-attention-mask"),
    ("attention mask and strength", lambda a, f: _ic_lora(a, f, "--conditioning-attention-mask", f["video"], "0.5",
                                                          "--conditioning-attention-strength", "0.5"),
     "--conditioning-attention-mask carries its own strength: drop --conditioning-attention-strength"),
    ("attention mask that is not a video", lambda a, f: _ic_lora(a, f, "--conditioning-attention-mask",
                                                                 f["fake_video"], "0.5"), "clip.mp4"),
    ("attention mask strength above 1", lambda a, f: _ic_lora(a, f, "--conditioning-attention-mask", f["video"], "2"),
     "2.0 is not in the range 0.0<=x<=1.0"),
]  # fmt: skip


def _extend(args, files, *extra):
    """An extend run (the clip sets size and rate) with what `extra` adds or breaks."""
    for option in ("--height", "--width", "--num-frames"):
        args = _without(args, option)
    return args + ["--pipeline", "extend", *extra]


def _ic_lora(args, files, *extra):
    """An ic-lora run with everything but what `extra` adds or breaks."""
    return _without(args, "--num-inference-steps") + [
        "--pipeline", "ic-lora", "--video-conditioning", files["video"], "1", "--lora", files["lora"], "1",
        "--spatial-upscaler-path", files["upscaler"], "--height", "128", "--width", "128", *extra]  # fmt: skip


def _retake(args, files, *extra):
    """A retake run (the clip sets size, frames and rate) with what `extra` adds or breaks."""
    for option in ("--height", "--width", "--num-frames"):
        args = _without(args, option)
    return args + ["--pipeline", "retake", *extra]


def _a2vid(args, files, *extra):
    """An a2vid run with everything but what `extra` adds or breaks."""
    return args + ["--pipeline", "a2vid", "--spatial-upscaler-path", files["upscaler"], "--distilled-lora", files["lora"],
                   "0.6", "--height", "128", "--width", "128", *extra]  # fmt: skip


def _ic_lora_onto_input(args, files):
    """An ic-lora run whose output path is its own reference video."""
    return _without(_with(args, "--output-path", files["video"]), "--num-inference-steps") + [
        "--pipeline", "ic-lora", "--video-conditioning", files["video"], "1", "--lora", files["lora"], "1",
        "--spatial-upscaler-path", files["upscaler"], "--height", "128", "--width", "128",
    ]  # fmt: skip


def _hashes(paths) -> dict[str, str]:
    hashes = {}
    for path in map(Path, paths):
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            hashes[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return hashes


def _assert_refused(result, message: str, before: dict, after: dict, leftovers: list) -> None:
    stderr = result.stderr.strip()
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output, result.output
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: "), stderr
    assert message in stderr, stderr
    assert after == before, "an input file changed"
    assert leftovers == [], f"left behind: {leftovers}"
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].removesuffix(" (call)")
    REFUSALS.append((test, stderr))


@pytest.fixture
def no_weights_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(mx, "load", refuse)


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in GENERATE_CASES], ids=[c[0] for c in GENERATE_CASES])
def test_generate_refuses_bad_input_before_loading(files, tmp_path, no_weights_read, change, message):
    out = tmp_path / "out.mp4"
    args = change(_generate_args(files, str(out)), files)
    inputs = [files[k] for k in ("checkpoint", "gemma", "image", "upscaler", "lora", "video")]
    before = _hashes(inputs)
    result = CliRunner().invoke(main, args)
    _assert_refused(result, message, before, _hashes(inputs), sorted(os.listdir(tmp_path)))


def test_generate_refuses_quantizing_a_quantized_checkpoint(files, quantized, tmp_path, no_weights_read):
    out = tmp_path / "out.mp4"
    args = _with(_generate_args(files, str(out)), "--checkpoint-path", quantized) + ["--quantization", "int4"]
    before = _hashes([quantized])
    result = CliRunner().invoke(main, args)
    _assert_refused(result, "is already quantized; drop --quantization int4", before, _hashes([quantized]),
                    sorted(os.listdir(tmp_path)))  # fmt: skip
    result = CliRunner().invoke(main, _with(args[:-2], "--lora", files["lora"], "1"))
    _assert_refused(result, "LoRAs cannot be fused into int8/int4", before, _hashes([quantized]), [])


def _folder(f, name):
    return str(f["folder"] / name)


# (id, the command line, message fragment)
TOOL_CASES = [
    ("convert onto its source", lambda f: ["convert", f["checkpoint"], f["checkpoint"]], "refusing to overwrite it"),
    ("convert onto a hard link of its source", lambda f: ["convert", f["checkpoint"], f["hardlink"]],
     "refusing to overwrite"),
    ("convert onto a symlink to its source", lambda f: ["convert", f["checkpoint"], f["symlink"]],
     "refusing to overwrite"),
    ("convert into a missing folder", lambda f: ["convert", f["checkpoint"], _folder(f, "no/x.safetensors")],
     "does not exist; create it first"),
    ("convert to a non-safetensors name", lambda f: ["convert", f["checkpoint"], _folder(f, "x.bin")],
     "must end in .safetensors"),
    ("convert a missing file", lambda f: ["convert", "nope.safetensors", _folder(f, "x.safetensors")], "no such file"),
    ("quantize onto its source", lambda f: ["quantize", f["checkpoint"], f["checkpoint"], "--mode", "int8"],
     "refusing to overwrite"),
    ("quantize onto a hard link", lambda f: ["quantize", f["checkpoint"], f["hardlink"], "--mode", "int8"],
     "refusing to overwrite"),
    ("quantize onto its LoRA", lambda f: ["quantize", f["checkpoint"], f["lora"], "--mode", "int8", "--lora",
                                          f["lora"], "1"], "refusing to overwrite"),
    ("quantize into a missing folder", lambda f: ["quantize", f["checkpoint"], _folder(f, "no/q.safetensors"),
                                                  "--mode", "int4"], "does not exist; create it first"),
    ("quantize with a wrong LoRA", lambda f: ["quantize", f["checkpoint"], _folder(f, "q.safetensors"), "--mode",
                                              "int8", "--lora", f["wrong_lora"], "1"], "attn9"),
    ("quantize without a mode", lambda f: ["quantize", f["checkpoint"], _folder(f, "q.safetensors")],
     "Missing option '--mode'"),
    ("encode an empty prompt", lambda f: ["encode-prompt", "--checkpoint-path", f["checkpoint"], "--gemma-path",
                                          f["gemma"], "--prompt", "", "--output-path", _folder(f, "e.safetensors")],
     "is empty"),
    ("encode into a text file", lambda f: ["encode-prompt", "--checkpoint-path", f["checkpoint"], "--gemma-path",
                                           f["gemma"], "--prompt", "a fox", "--output-path", _folder(f, "e.txt")],
     "must end in .safetensors"),
    ("encode with a missing Gemma", lambda f: ["encode-prompt", "--checkpoint-path", f["checkpoint"], "--gemma-path",
                                               "nope", "--prompt", "a fox", "--output-path",
                                               _folder(f, "e.safetensors")], "no such directory"),
    ("unknown command", lambda f: ["generat"], "No such command 'generat'"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "message"), [c[1:] for c in TOOL_CASES], ids=[c[0] for c in TOOL_CASES])
def test_tools_refuse_bad_input_and_never_replace_an_input(files, no_weights_read, command, message):
    folder = Path(files["folder"])
    inputs = [files["checkpoint"], files["lora"], files["gemma"]]
    before, listing = _hashes(inputs), sorted(os.listdir(folder))
    result = CliRunner().invoke(main, command(files))
    _assert_refused(result, message, before, _hashes(inputs), sorted(set(os.listdir(folder)) - set(listing)))


def test_quantized_checkpoint_is_complete_and_generates(files, quantized, tmp_path):
    """`quantize` writes the whole checkpoint (every non-DiT tensor as in the source), which
    `generate --checkpoint-path` takes as it is."""
    from LTX_2_MLX.loader.checkpoint import read_metadata, tensor_names

    source, written = set(tensor_names(files["checkpoint"])), set(tensor_names(quantized))
    kept = {n for n in source if not n.startswith("model.diffusion_model.transformer_blocks.")}
    assert kept <= written
    assert read_metadata(quantized)["config"] == read_metadata(files["checkpoint"])["config"]
    out = tmp_path / "q.mp4"
    result = CliRunner().invoke(main, _with(_generate_args(files, str(out)), "--checkpoint-path", quantized))
    assert result.exit_code == 0, result.output
    assert out.is_file() and sorted(os.listdir(tmp_path)) == ["q.mp4"]


def test_unexpected_error_is_one_line_with_the_traceback_in_a_file(files, tmp_path, monkeypatch):
    import LTX_2_MLX.pipelines.registry as registry

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(registry.PIPELINES["one-stage"], "generate", broken)
    result = CliRunner().invoke(main, _generate_args(files, str(tmp_path / "x.mp4")))
    stderr = result.stderr.strip()
    assert result.exit_code == 1 and len(stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert "internal error (RuntimeError: something inside broke)" in stderr and "--debug" in stderr
    log = Path(stderr.split("The full traceback is in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "something inside broke" in log.read_text()
    log.unlink()
    with pytest.raises(RuntimeError, match="something inside broke"):
        CliRunner().invoke(main, ["--debug", *_generate_args(files, str(tmp_path / "x.mp4"))], catch_exceptions=False)
    os.environ.pop("LTX2_MLX_DEBUG", None)
    assert os.listdir(tmp_path) == []


def test_version():
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ltx2-mlx {version('ltx-2-mlx')}"


# A child process that runs a command made slow at the point where it writes its output, so a
# signal arrives while the partial file exists.
_SLOW_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import LTX_2_MLX.loader.convert as convert
    import LTX_2_MLX.pipelines.media_io as media_io
    from LTX_2_MLX.cli import main

    real_bytes = convert._tensor_bytes
    def slow_bytes(array):
        time.sleep(0.05)
        return real_bytes(array)
    convert._tensor_bytes = slow_bytes

    real_chain = media_io._chain
    def slow_chain(first, rest):
        for chunk in real_chain(first, rest):
            yield chunk
            print("writing", flush=True)
            time.sleep(60)
    media_io._chain = slow_chain
    main(sys.argv[1:], prog_name="ltx2-mlx")
""")


def _interrupt(args: list[str], sig: int, partial: Path, cwd: Path) -> subprocess.CompletedProcess:
    process = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), process.communicate()
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")])
def test_convert_stopped_by_a_signal_leaves_nothing(files, tmp_path, sig, code, said):
    destination = tmp_path / "converted.safetensors"
    result = _interrupt(["convert", files["checkpoint"], str(destination)], sig,
                        tmp_path / "converted.safetensors.partial", tmp_path)  # fmt: skip
    assert result.returncode == code, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_generate_stopped_by_sigterm_leaves_nothing(files, tmp_path):
    args = _generate_args(files, str(tmp_path / "fox.mp4"))
    result = _interrupt(args, signal.SIGTERM, tmp_path / ".fox.partial.mp4", tmp_path)
    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_a_successful_generate_says_what_loads_and_nothing_from_ffmpeg(files, tmp_path):
    out = tmp_path / "fox.mp4"
    result = CliRunner().invoke(main, _generate_args(files, str(out)) + ["--seed", "4"])
    assert result.exit_code == 0, result.output
    for part in ("the Gemma 3 text encoder", "the transformer", "the video VAE decoder", "the audio VAE decoder"):
        assert f"loading {part}" in result.stderr, result.stderr
    assert "Guessed Channel Layout" not in result.output and "Error" not in result.output
    assert result.stdout.strip() == f"wrote {out}"
    frames = np.stack([np.frombuffer(f, np.uint8) for f in list(__import__("imageio_ffmpeg").read_frames(str(out)))[1:]])
    assert frames.shape[0] == 9


def test_generate_without_paths_uses_the_default_model(files, tmp_path, monkeypatch):
    """No --checkpoint-path: the default model's files come from the hub module (here: the tiny
    files, as if cached) and the distilled pipeline runs with its upscaler and Gemma."""
    import LTX_2_MLX.loader.hub as hub

    asked = []

    def cached(need_gemma, download=True, echo=None):
        asked.append(need_gemma)
        return hub.DefaultFiles(Path(files["checkpoint"]), Path(files["upscaler"]), Path(files["gemma"]))

    monkeypatch.setattr(hub, "resolve_default_model", cached)
    monkeypatch.chdir(tmp_path)
    args = ["generate", "--prompt", "A red fox runs", "--height", "128", "--width", "128", "--num-frames", "9",
            "--dtype", "float32", "--seed", "3"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert asked == [True] and os.listdir(tmp_path) == ["a-red-fox-runs-3.mp4"]
    assert "loading the spatial upscaler" in result.stderr
    result = CliRunner().invoke(main, args + ["--pipeline", "one-stage"])
    assert result.exit_code == 2 and "needs its own checkpoint: pass --checkpoint-path" in result.stderr


def test_generate_without_paths_offline_says_what_to_do(files, tmp_path, monkeypatch, no_weights_read):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["generate", "--prompt", "A red fox runs"])
    _assert_refused(result, "HF_HUB_OFFLINE is set", {}, {}, sorted(os.listdir(tmp_path)))
    assert "--checkpoint-path" in result.stderr

"""Conditioning-image preprocessing against ltx-pipelines, and mp4 writing that never leaves a
half-written file."""

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from ltx_pipelines.utils.media_io import resize_and_center_crop as reference_resize_and_center_crop
from PIL import Image
from reference import assert_matches

from LTX_2_MLX.pipelines.media_io import (
    compress_like_video,
    load_image_conditioning,
    resize_and_center_crop,
    write_video,
)


@pytest.mark.parametrize(("source", "target"), [((37, 53), (32, 64)), ((96, 64), (64, 96)), ((30, 40), (30, 40))])
def test_resize_and_center_crop_matches_reference(source, target):
    image = np.random.RandomState(0).randint(0, 256, (*source, 3)).astype(np.float32)
    expected = reference_resize_and_center_crop(torch.from_numpy(image), *target)  # (1, C, 1, H, W)
    ours = resize_and_center_crop(image[None], *target)  # (F, H, W, C)
    assert_matches(f"resize_and_center_crop {source}->{target}", ours.transpose(3, 0, 1, 2)[None], expected)


def test_compressed_image_keeps_content_but_is_not_the_original():
    rng = np.random.RandomState(1)
    image = np.clip(rng.normal(128, 40, (64, 96, 3)), 0, 255).astype(np.uint8)
    assert np.array_equal(compress_like_video(image, crf=0), image)
    compressed = compress_like_video(image, crf=33)
    assert compressed.shape == image.shape and compressed.dtype == np.uint8
    assert not np.array_equal(compressed, image)
    assert np.abs(compressed.astype(float) - image).mean() < 40


def test_load_image_conditioning_gives_encoder_input(tmp_path):
    path = tmp_path / "cond.png"
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(path)
    image = load_image_conditioning(path, 32, 64, crf=0)
    assert image.shape == (1, 3, 1, 32, 64)
    assert np.allclose(np.array(image), 200 / 127.5 - 1, atol=1e-5)


def test_load_image_conditioning_rejects_non_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read the conditioning image"):
        load_image_conditioning(path, 32, 32)


def test_write_video_with_audio_round_trips(tmp_path):
    frames = np.linspace(0, 255, 9 * 32 * 64 * 3).astype(np.uint8).reshape(9, 32, 64, 3)
    seconds = np.arange(16000) / 16000
    waveform = np.stack([np.sin(2 * np.pi * 440 * seconds), np.sin(2 * np.pi * 220 * seconds)]) * 0.5
    out = write_video(tmp_path / "clip.mp4", [frames[:5], frames[5:]], fps=24, audio=(waveform, 16000))
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = reader.__next__()
    assert tuple(meta["size"]) == (64, 32) and meta["audio_codec"] == "aac"
    assert sum(1 for _ in reader) == 9
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_write_video_leaves_nothing_when_generation_fails(tmp_path):
    def chunks():
        yield np.zeros((3, 32, 32, 3), np.uint8)
        raise RuntimeError("out of memory while decoding")

    with pytest.raises(RuntimeError, match="out of memory"):
        write_video(tmp_path / "clip.mp4", chunks(), fps=24)
    assert list(tmp_path.iterdir()) == []

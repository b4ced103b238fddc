"""Reading conditioning images and writing the generated video (with its audio) as mp4,
through the ffmpeg binary that imageio-ffmpeg ships."""

import math
import os
import re
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio_ffmpeg
import mlx.core as mx
import numpy as np
from PIL import Image

# The reference passes conditioning images through one H.264 frame at this quality, so
# the model sees the compression artifacts it was trained with.
DEFAULT_IMAGE_CRF = 33


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the conditioning image ({err}); give a PNG or JPEG file.") from None


def check_image_file(path: str | Path) -> None:
    """Refuse a conditioning image that cannot be decoded (before any model loads)."""
    load_image(path)


def check_video_file(path: str | Path) -> None:
    """Refuse a conditioning video that cannot be decoded or has no frames."""
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        next(reader)
        next(reader)
        reader.close()
    except (OSError, RuntimeError, StopIteration) as err:
        reason = " ".join(str(err).split("=== stderr ===")[0].split())  # ffmpeg's own dump adds nothing here
        detail = f" ({reason[:160]})" if reason else ""
        raise ValueError(f"{path}: cannot read it as a video{detail}; give an mp4, mov or webm file.") from None


def compress_like_video(image: np.ndarray, crf: float = DEFAULT_IMAGE_CRF) -> np.ndarray:
    """Encode one frame with libx264 at `crf` (veryfast, yuv420p) and decode it back."""
    if crf == 0:
        return image
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = np.ascontiguousarray(image[:height, :width])
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as folder:
        encoded = os.path.join(folder, "frame.mp4")
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", "1", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
             encoded],
            input=image.tobytes(), check=True, capture_output=True,
        )  # fmt: skip
        decoded = subprocess.run(
            [ffmpeg, "-loglevel", "error", "-i", encoded, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
    return np.frombuffer(decoded, np.uint8).reshape(height, width, 3)


def _bilinear_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel-centred (align_corners=False) linear resize."""
    # float32 coordinates, as PyTorch's CPU interpolate computes them.
    scale = np.float32(source / target)
    position = np.maximum((np.arange(target, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    lower = np.minimum(np.floor(position).astype(np.int64), source - 1)
    upper = np.minimum(lower + 1, source - 1)
    return lower, upper, (position - lower).astype(np.float32)


def resize_and_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (F, H, W, C) frames to cover height x width (bilinear), crop the centre.

    Returns (F, height, width, C) float32 with the input's value range.
    """
    source_h, source_w = frames.shape[1:3]
    scale = max(height / source_h, width / source_w)
    new_h, new_w = math.ceil(source_h * scale), math.ceil(source_w * scale)
    frames = frames.astype(np.float32)
    top, bottom, weight = _bilinear_weights(source_h, new_h)
    frames = frames[:, top] * (1 - weight)[None, :, None, None] + frames[:, bottom] * weight[None, :, None, None]
    left, right, weight = _bilinear_weights(source_w, new_w)
    frames = frames[:, :, left] * (1 - weight)[None, None, :, None] + frames[:, :, right] * weight[None, None, :, None]
    crop_top, crop_left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, crop_top : crop_top + height, crop_left : crop_left + width]


def load_image_conditioning(path: str | Path, height: int, width: int, crf: float = DEFAULT_IMAGE_CRF) -> mx.array:
    """An image as the VAE encoder's input: (1, 3, 1, height, width) in [-1, 1]."""
    image = compress_like_video(load_image(path), crf)
    frames = resize_and_center_crop(image[None], height, width)
    return mx.array(frames / 127.5 - 1.0).transpose(3, 0, 1, 2)[None]


def read_audio(
    path: str | Path, start_time: float = 0.0, max_duration: float | None = None
) -> tuple[np.ndarray, int]:
    """The first audio stream of an audio or video file as (2, samples) float32 in [-1, 1] at
    its own sample rate, from `start_time` seconds for at most `max_duration` seconds (to the
    end when None), as ltx-pipelines' `decode_audio_from_file` cuts it. Mono is doubled to
    stereo and more channels are mixed down (the audio VAE and the mp4 writer take stereo)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    rate = re.search(r"Stream #\S+.*?: Audio: .*?(\d+) Hz", probe)
    if rate is None:
        what = "it has no audio stream" if "Stream #" in probe else "it is not an audio or video file ffmpeg can read"
        raise ValueError(f"{path}: cannot read audio from it ({what}); give a wav, mp3, m4a, flac or a video with sound")
    sample_rate = int(rate.group(1))
    # Decode from the start and cut here, by sample count as the reference does (no seek rounding).
    limit = [] if max_duration is None else ["-t", f"{start_time + max_duration + 0.1:.6f}"]
    decoded = subprocess.run(
        [ffmpeg, "-v", "error", *limit, "-i", str(path), "-map", "0:a:0", "-ac", "2", "-f", "f32le",
         "-acodec", "pcm_f32le", "-"],
        capture_output=True,
    )  # fmt: skip
    if decoded.returncode != 0:
        detail = " ".join(decoded.stderr.decode(errors="replace").split())[:160]
        raise ValueError(f"{path}: cannot decode its audio ({detail}).")
    waveform = np.frombuffer(decoded.stdout, np.float32).reshape(-1, 2).T
    start = round(start_time * sample_rate)
    if start >= waveform.shape[1]:
        raise ValueError(
            f"--audio-start-time {start_time:g} s is past the end of {path} ({waveform.shape[1] / sample_rate:.2f} s "
            "of audio); give an earlier start"
        )
    end = None if max_duration is None else start + round(max_duration * sample_rate)
    return np.ascontiguousarray(waveform[:, start:end]), sample_rate


def _write_wav(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    """(channels, samples) float in [-1, 1] -> 16-bit PCM WAV (mono is doubled to stereo)."""
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.shape[0] == 1:
        waveform = np.repeat(waveform, 2, axis=0)
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767.0).astype(np.int16)
    with wave.open(path, "wb") as f:
        f.setnchannels(pcm.shape[0])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(np.ascontiguousarray(pcm.T).tobytes())


def write_video(
    path: str | Path,
    frame_chunks: Iterable[np.ndarray],
    fps: float,
    audio: tuple[np.ndarray, int] | None = None,
    total_chunks: int | None = None,
) -> Path:
    """Write (F, H, W, 3) uint8 chunks as H.264 mp4, with audio (waveform, rate) as AAC.

    Chunks are written as they arrive (a long video never sits in memory whole). The file
    appears only when complete: a failure leaves nothing at `path`.
    """
    from tqdm import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks: Iterator[np.ndarray] = iter(frame_chunks)
    first = next(chunks)
    height, width = first.shape[1:3]
    partial = path.with_name(f".{path.stem}.partial{path.suffix or '.mp4'}")
    with tempfile.TemporaryDirectory() as folder:
        audio_path = None
        if audio is not None:
            audio_path = os.path.join(folder, "audio.wav")
            _write_wav(audio_path, np.asarray(audio[0], dtype=np.float32), int(audio[1]))
        writer = imageio_ffmpeg.write_frames(
            str(partial), (width, height), fps=fps, codec="libx264", quality=None, macro_block_size=1,
            output_params=["-crf", "18", "-preset", "medium"], audio_path=audio_path,
            audio_codec="aac" if audio_path else None, ffmpeg_log_level="error",
        )  # fmt: skip
        try:
            writer.send(None)
            progress = tqdm(total=total_chunks, desc="writing video", unit="chunk", leave=False)
            for chunk in _chain(first, chunks):
                for frame in chunk:
                    writer.send(np.ascontiguousarray(frame))
                progress.update(1)
            progress.close()
            writer.close()
            os.replace(partial, path)
        finally:
            writer.close()
            if partial.exists():
                partial.unlink()
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def load_video_conditioning(path: str | Path, height: int, width: int, frame_cap: int) -> mx.array:
    """A video file's first frames as the VAE encoder's input, (1, 3, F, height, width) in [-1, 1].

    At most `frame_cap` frames are read, then cut to the longest 8k+1 run the causal VAE takes.
    """
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        source_width, source_height = next(reader)["size"]
    except (OSError, RuntimeError, StopIteration) as err:
        raise ValueError(f"{path}: cannot read the conditioning video ({err}).") from None
    frames = []
    try:
        for raw in reader:
            frames.append(np.frombuffer(raw, np.uint8).reshape(source_height, source_width, 3))
            if len(frames) == frame_cap:
                break
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path}: the conditioning video has no frames.")
    frames = frames[: (len(frames) - 1) // 8 * 8 + 1]
    resized = resize_and_center_crop(np.stack(frames), height, width)
    return mx.array(resized / 127.5 - 1.0).transpose(3, 0, 1, 2)[None]


def read_video_file(path: str | Path) -> tuple[np.ndarray, float]:
    """Every frame of a video file as (F, H, W, 3) uint8, and its frame rate."""
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(raw, np.uint8).reshape(height, width, 3) for raw in reader]
    except (OSError, RuntimeError, StopIteration) as err:
        reason = " ".join(str(err).split("=== stderr ===")[0].split())  # ffmpeg's own dump adds nothing here
        detail = f" ({reason[:160]})" if reason else ""
        raise ValueError(f"{path}: cannot read it as a video{detail}; give an mp4, mov or webm file.") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames.")
    return np.stack(frames), float(meta["fps"])


def has_audio_stream(path: str | Path) -> bool:
    """Whether ffmpeg finds an audio stream in the file (read it with `read_audio`)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False)
    return re.search(r"Stream #\S+.*?: Audio: ", probe.stderr) is not None

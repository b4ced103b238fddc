"""Normalisation layers, latent statistics and the waveform -> log-mel front end.

Inside the audio VAE arrays are channels-last, (B, T, F, C) with T the spectrogram time and F
the mel axis; the public boundary keeps ltx-core's (B, C, T, F).
"""

import math
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import mlx.core as mx
import numpy as np
from mlx import nn

from LTX_2_MLX.model.common.normalization import PixelNorm


class NormType(Enum):
    """GROUP (GroupNorm, 32 groups) or PIXEL (RMS over channels at each location)."""

    GROUP = "group"
    PIXEL = "pixel"


def build_normalization_layer(in_channels: int, *, num_groups: int = 32, normtype: NormType = NormType.GROUP):
    if normtype == NormType.GROUP:
        return nn.GroupNorm(num_groups, in_channels, eps=1e-6, affine=True, pytorch_compatible=True)
    if normtype == NormType.PIXEL:
        return PixelNorm(eps=1e-6)
    raise ValueError(f"Invalid normalization type: {normtype}")


class PerChannelStatistics(nn.Module):
    """Dataset statistics of the latent means (`audio_vae.per_channel_statistics.*`).

    One entry per patchified feature, i.e. per (latent channel, latent mel bin) pair in the
    order ltx-core's "b c t f -> b t (c f)" gives. The checkpoint names them `std-of-means` /
    `mean-of-means`; MLX attribute names cannot hold '-' (see `sanitize`).
    """

    CHECKPOINT_KEYS: ClassVar[dict[str, str]] = {
        "std-of-means": "std_of_means",
        "mean-of-means": "mean_of_means",
    }

    def __init__(self, latent_channels: int):
        super().__init__()
        self.std_of_means = mx.ones((latent_channels,))
        self.mean_of_means = mx.zeros((latent_channels,))

    @classmethod
    def sanitize(cls, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """The two statistics the model uses under their module names; others are ignored
        (ltx-core loads non-strictly), a missing one stays missing so strict loading names it."""
        return {cls.CHECKPOINT_KEYS[k]: v for k, v in weights.items() if k in cls.CHECKPOINT_KEYS}

    def _as_map(self, stat: mx.array, x: mx.array) -> mx.array:
        """A (C·F,) statistic laid out as (F, C) to broadcast over a (B, T, F, C) latent."""
        _, _, f, c = x.shape
        if c * f != stat.shape[0]:
            raise ValueError(
                f"audio latent has {c} channels x {f} mel bins = {c * f} features, but the VAE's "
                f"per-channel statistics hold {stat.shape[0]}; pass a latent of shape (B, {c}, T, "
                f"{stat.shape[0] // c if c else '?'})"
            )
        return stat.reshape(c, f).T.astype(x.dtype)

    def normalize(self, x: mx.array) -> mx.array:
        return (x - self._as_map(self.mean_of_means, x)) / self._as_map(self.std_of_means, x)

    def un_normalize(self, x: mx.array) -> mx.array:
        return x * self._as_map(self.std_of_means, x) + self._as_map(self.mean_of_means, x)


@dataclass
class Audio:
    """A waveform (B, channels, samples) or (channels, samples) and its sample rate in Hz."""

    waveform: mx.array
    sampling_rate: int


# ---------------------------------------------------------------------------------------------
# Log-mel front end. ltx-core uses torchaudio's MelSpectrogram (Hann window, centred reflect
# padding, magnitude, Slaney mel scale and norm) and torchaudio.functional.resample; these are
# the same formulas in numpy / mx.fft, so no torchaudio is needed.
# ---------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(freq: float) -> float:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    if freq >= min_log_hz:
        return min_log_mel + math.log(freq / min_log_hz) / logstep
    return freq / f_sp


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = f_sp * mels
    logarithmic = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, logarithmic, linear)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular filters on the Slaney mel scale with Slaney (area) norm,
    as torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")."""
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_pts = np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2)
    f_pts = _mel_to_hz_slaney(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down_slopes = -slopes[:, :-2] / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down_slopes, up_slopes))
    fb *= 2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])[None, :]
    return fb.astype(np.float32)


def magnitude_spectrogram(waveform: mx.array, n_fft: int, hop_length: int) -> mx.array:
    """|STFT| (..., frames, n_fft//2 + 1): periodic Hann window of n_fft, frames centred by
    reflect padding of n_fft//2 (torch.stft(center=True, pad_mode="reflect"))."""
    half = n_fft // 2
    if waveform.shape[-1] <= half:
        raise ValueError(
            f"waveform of {waveform.shape[-1]} samples is too short for n_fft={n_fft}; pass at least {half + 1} samples"
        )
    widths = [(0, 0)] * (waveform.ndim - 1) + [(half, half)]
    padded = mx.pad(waveform.astype(mx.float32), widths, mode="reflect")
    n_frames = 1 + (padded.shape[-1] - n_fft) // hop_length
    index = mx.arange(n_frames)[:, None] * hop_length + mx.arange(n_fft)[None, :]
    frames = mx.take(padded, index, axis=-1)  # (..., frames, n_fft)
    window = 0.5 - 0.5 * mx.cos(2 * math.pi * mx.arange(n_fft, dtype=mx.float32) / n_fft)
    return mx.abs(mx.fft.rfft(frames * window, axis=-1))


def _sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
    """Hann-windowed sinc kernels (new_freq, K) and the padding width, for rates already
    divided by their gcd (torchaudio's "sinc_interp_hann")."""
    base_freq = min(orig_freq, new_freq) * rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
    idx = np.arange(-width, width + orig_freq, dtype=np.float64)[None, :] / orig_freq
    t = (np.arange(0, -new_freq, -1, dtype=np.float64)[:, None] / new_freq + idx) * base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, 1.0, np.sin(t) / t)
    kernels = kernels * window * (base_freq / orig_freq)
    return kernels, width


def resample(waveform: mx.array, orig_freq: int, new_freq: int) -> mx.array:
    """Band-limited resampling along the last axis (torchaudio.functional.resample defaults)."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernels, width = _sinc_resample_kernel(orig, new)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = mx.pad(flat, [(0, 0), (width, width + orig)])[..., None]  # (N, L, 1)
    weight = mx.array(kernels.astype(np.float32))[..., None].astype(waveform.dtype)  # (new, K, 1)
    out = mx.conv1d(padded, weight, stride=orig)  # (N, frames, new): output sample frame·new + phase
    out = out.reshape(flat.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return out[:, :target_length].reshape(*shape[:-1], -1)


class AudioProcessor:
    """Waveform -> log-mel spectrogram (B, channels, frames, mel_bins), resampling first if needed."""

    def __init__(self, target_sample_rate: int, mel_bins: int, mel_hop_length: int, n_fft: int):
        self.target_sample_rate = target_sample_rate
        self.mel_bins = mel_bins
        self.mel_hop_length = mel_hop_length
        self.n_fft = n_fft
        fb = melscale_fbanks(n_fft // 2 + 1, 0.0, target_sample_rate / 2.0, mel_bins, target_sample_rate)
        self.mel_filters = mx.array(fb)

    def resample_audio(self, audio: Audio) -> Audio:
        if audio.sampling_rate == self.target_sample_rate:
            return audio
        waveform = resample(audio.waveform, audio.sampling_rate, self.target_sample_rate)
        return Audio(
            waveform=waveform.astype(audio.waveform.dtype),
            sampling_rate=self.target_sample_rate,
        )

    def waveform_to_mel(self, audio: Audio) -> mx.array:
        waveform = self.resample_audio(audio).waveform
        if waveform.ndim != 3:
            raise ValueError(
                f"waveform must be (batch, channels, samples), got shape {tuple(waveform.shape)}; "
                "add the missing axes with waveform[None] (and [:, None] for mono)"
            )
        magnitude = magnitude_spectrogram(waveform, self.n_fft, self.mel_hop_length)
        mel = magnitude @ self.mel_filters
        return mx.log(mx.maximum(mel, 1e-5)).astype(waveform.dtype)

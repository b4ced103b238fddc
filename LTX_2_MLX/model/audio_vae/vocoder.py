"""Mel spectrogram -> waveform: HiFi-GAN (LTX-2) or BigVGAN v2 with anti-aliased Snake
activations plus a bandwidth-extension stage (LTX-2.3).

Arrays are channels-last inside, (B, samples, C); the public boundary keeps ltx-core's
(B, 2, frames, mel_bins) in and (B, 2, samples) out.
"""

import math
from functools import cache, partial

import mlx.core as mx
import numpy as np
from mlx import nn

from LTX_2_MLX.model.audio_vae.model_configurator import (
    BandwidthExtensionConfig,
    GeneratorConfig,
    VocoderConfig,
)
from LTX_2_MLX.model.audio_vae.resnet import LRELU_SLOPE, ResBlock1


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


# ---------------------------------------------------------------------------------------------
# Anti-aliased resampling (kaiser- or Hann-windowed sinc filters), depthwise on (B, L, C).
# ---------------------------------------------------------------------------------------------


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """BigVGAN's low-pass filter (kernel_size,), normalised to unit DC gain."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    amplitude = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if amplitude > 50.0:
        beta = 0.1102 * (amplitude - 8.7)
    elif amplitude >= 21.0:
        beta = 0.5842 * (amplitude - 21) ** 0.4 + 0.07886 * (amplitude - 21.0)
    else:
        beta = 0.0
    window = np.kaiser(kernel_size, beta)
    time = np.arange(-half_size, half_size) + 0.5 if even else np.arange(kernel_size) - half_size
    if cutoff == 0:
        return np.zeros(kernel_size, dtype=np.float32)
    filter_ = 2 * cutoff * window * np.sinc(2 * cutoff * time)
    return (filter_ / filter_.sum()).astype(np.float32)


def hann_sinc_filter1d(ratio: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """The Hann-windowed sinc that torchaudio's resample uses for an integer upsampling ratio,
    and its half width in input samples."""
    width = math.ceil(lowpass_filter_width / rolloff)
    kernel_size = 2 * width * ratio + 1
    time = (np.arange(kernel_size) / ratio - width) * rolloff
    window = (
        np.cos(np.clip(time, -lowpass_filter_width, lowpass_filter_width) * math.pi / lowpass_filter_width / 2) ** 2
    )
    return (np.sinc(time) * window * rolloff / ratio).astype(np.float32), width


def depthwise_conv_transpose1d(x: mx.array, filter_: mx.array, stride: int) -> mx.array:
    """torch conv_transpose1d(x, filter_ per channel, stride, groups=C) on (B, L, C) ->
    (B, (L-1)·stride + K, C), in float32.

    Polyphase: output sample q·stride + p is sum_j filter_[j·stride + p] · x[q - j], so each
    phase is a short sum of shifted slices. One filter shared by all channels makes this an
    element-wise chain that mx.compile fuses; MLX's grouped convolutions are far slower here.
    """
    b, length, c = x.shape
    k = filter_.shape[0]
    taps = -(-k // stride)
    f = mx.pad(filter_.astype(mx.float32), [(0, taps * stride - k)])
    padded = mx.pad(x.astype(mx.float32), [(0, 0), (taps - 1, taps - 1), (0, 0)])
    span = length + taps - 1
    phases = []
    for phase in range(stride):
        terms = [f[j * stride + phase] * padded[:, taps - 1 - j : taps - 1 - j + span] for j in range(taps)]
        phases.append(sum(terms[1:], terms[0]))
    out = mx.stack(phases, axis=2).reshape(b, span * stride, c)
    return out[:, : (length - 1) * stride + k]


def depthwise_conv1d(x: mx.array, filter_: mx.array, stride: int = 1) -> mx.array:
    """torch conv1d(x, filter_ per channel, stride, groups=C) on (B, L, C), no padding, in
    float32: the sum over taps of strided slices (see depthwise_conv_transpose1d)."""
    k = filter_.shape[0]
    span = stride * ((x.shape[1] - k) // stride) + 1
    f, x = filter_.astype(mx.float32), x.astype(mx.float32)
    terms = [f[tap] * x[:, tap : tap + span : stride] for tap in range(k)]
    return sum(terms[1:], terms[0])


def _replicate_pad(x: mx.array, left: int, right: int) -> mx.array:
    return mx.pad(x, [(0, 0), (left, right), (0, 0)], mode="edge")


def lowpass1d(x: mx.array, filter_: mx.array, *, stride: int, pad_left: int, pad_right: int) -> mx.array:
    """LowPassFilter1d: replicate padding, then the depthwise filter with `stride` (float32 out)."""
    return depthwise_conv1d(_replicate_pad(x, pad_left, pad_right), filter_, stride)


def upsample1d(x: mx.array, filter_: mx.array, *, ratio: int, pad: int, pad_left: int, pad_right: int) -> mx.array:
    """UpSample1d: replicate padding, transposed depthwise filter, gain `ratio`, crop (float32 out)."""
    x = ratio * depthwise_conv_transpose1d(_replicate_pad(x, pad, pad), filter_, ratio)
    return x[:, pad_left : x.shape[1] - pad_right]


def snake(x: mx.array, alpha: mx.array, inverse_beta: mx.array) -> mx.array:
    """x + sin²(αx)/β, per channel (the last axis)."""
    return x + inverse_beta * mx.square(mx.sin(x * alpha))


class LowPassFilter1d(nn.Module):
    """Replicate-padded depthwise low-pass filter; `filter` is a checkpoint buffer."""

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, kernel_size: int = 12):
        super().__init__()
        if cutoff < 0:
            raise ValueError("Minimum cutoff must be larger than zero.")
        if cutoff > 0.5:
            raise ValueError("A cutoff above 0.5 does not make sense.")
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.stride = stride
        self.filter = mx.array(kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def geometry(self) -> dict:
        return {"stride": self.stride, "pad_left": self.pad_left, "pad_right": self.pad_right}

    def __call__(self, x: mx.array) -> mx.array:
        return lowpass1d(x, self.filter, **self.geometry()).astype(x.dtype)


class UpSample1d(nn.Module):
    """Sinc-interpolating upsampler by an integer ratio (kaiser: BigVGAN; hann: torchaudio's)."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None, window_type: str = "kaiser"):
        super().__init__()
        self.ratio = ratio
        if window_type == "hann":
            filter_, width = hann_sinc_filter1d(ratio)
            self.kernel_size = filter_.shape[0]
            self.pad = width
            self.pad_left = 2 * width * ratio
            self.pad_right = self.kernel_size - ratio
        else:
            self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
            self.pad = self.kernel_size // ratio - 1
            self.pad_left = self.pad * ratio + (self.kernel_size - ratio) // 2
            self.pad_right = self.pad * ratio + (self.kernel_size - ratio + 1) // 2
            filter_ = kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, self.kernel_size)
        self.filter = mx.array(filter_)
        self._compiled = _compiled_upsample1d(tuple(self.geometry().items()))

    def geometry(self) -> dict:
        return {"ratio": self.ratio, "pad": self.pad, "pad_left": self.pad_left, "pad_right": self.pad_right}

    def __call__(self, x: mx.array) -> mx.array:
        return self._compiled(x, self.filter).astype(x.dtype)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        super().__init__()
        kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=kernel_size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.lowpass(x)


class Snake(nn.Module):
    """x + sin²(αx)/α per channel, α stored as log α."""

    def __init__(self, in_features: int, alpha_logscale: bool = True):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = mx.zeros((in_features,)) if alpha_logscale else mx.ones((in_features,))

    def coefficients(self) -> tuple[mx.array, mx.array]:
        """(α, 1/(α + eps)) in float32."""
        alpha = self.alpha.astype(mx.float32)
        alpha = mx.exp(alpha) if self.alpha_logscale else alpha
        return alpha, 1.0 / (alpha + 1e-9)

    def __call__(self, x: mx.array) -> mx.array:
        return snake(x, *self.coefficients()).astype(x.dtype)


class SnakeBeta(nn.Module):
    """x + sin²(αx)/β per channel, α and β stored as logs."""

    def __init__(self, in_features: int, alpha_logscale: bool = True):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = mx.zeros((in_features,)) if alpha_logscale else mx.ones((in_features,))
        self.beta = mx.zeros((in_features,)) if alpha_logscale else mx.ones((in_features,))

    def coefficients(self) -> tuple[mx.array, mx.array]:
        """(α, 1/(β + eps)) in float32."""
        alpha, beta = self.alpha.astype(mx.float32), self.beta.astype(mx.float32)
        if self.alpha_logscale:
            alpha, beta = mx.exp(alpha), mx.exp(beta)
        return alpha, 1.0 / (beta + 1e-9)

    def __call__(self, x: mx.array) -> mx.array:
        return snake(x, *self.coefficients()).astype(x.dtype)


def _activation1d(x, up_filter, alpha, inverse_beta, down_filter, *, up: dict, down: dict):
    x = upsample1d(x, up_filter, **up)
    return lowpass1d(snake(x, alpha, inverse_beta), down_filter, **down)


@cache
def _compiled_activation1d(up: tuple, down: tuple):
    """One compiled function per filter geometry, shared by all activations that have it."""
    return mx.compile(partial(_activation1d, up=dict(up), down=dict(down)))


@cache
def _compiled_upsample1d(geometry: tuple):
    return mx.compile(partial(upsample1d, **dict(geometry)))


class Activation1d(nn.Module):
    """Activation at twice the rate: upsample 2x, activate, low-pass and downsample 2x.

    The three steps run as one compiled function, in float32 inside (the reference rounds to the
    working dtype after each step).
    """

    def __init__(
        self,
        activation: nn.Module,
        up_ratio: int = 2,
        down_ratio: int = 2,
        up_kernel_size: int = 12,
        down_kernel_size: int = 12,
    ):
        super().__init__()
        self.act = activation
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)
        self._compiled = _compiled_activation1d(
            tuple(self.upsample.geometry().items()), tuple(self.downsample.lowpass.geometry().items())
        )

    def __call__(self, x: mx.array) -> mx.array:
        alpha, inverse_beta = self.act.coefficients()
        out = self._compiled(x, self.upsample.filter, alpha, inverse_beta, self.downsample.lowpass.filter)
        return out.astype(x.dtype)


class AMPBlock1(nn.Module):
    """BigVGAN's anti-aliased multi-periodicity block: three residual (act, dilated conv, act, conv)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation: tuple[int, ...] = (1, 3, 5),
        activation: str = "snake",
    ):
        super().__init__()
        act_cls = SnakeBeta if activation == "snakebeta" else Snake
        self.convs1 = [
            nn.Conv1d(
                channels,
                channels,
                kernel_size,
                dilation=d,
                padding=get_padding(kernel_size, d),
            )
            for d in dilation[:3]
        ]
        self.convs2 = [
            nn.Conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size, 1)) for _ in range(3)
        ]
        self.acts1 = [Activation1d(act_cls(channels)) for _ in range(3)]
        self.acts2 = [Activation1d(act_cls(channels)) for _ in range(3)]

    def __call__(self, x: mx.array) -> mx.array:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.acts1, self.acts2, strict=True):
            x = x + c2(a2(c1(a1(x))))
        return x


def mel_to_channels_last(mel: mx.array) -> mx.array:
    """(B, 2, frames, mel_bins) stereo or (B, frames, mel_bins) mono -> (B, frames, channels),
    stereo channels ordered (side, mel bin) as ltx-core's "b s c t -> b (s c) t"."""
    if mel.ndim == 4:
        if mel.shape[1] != 2:
            raise ValueError(f"stereo mel must be (batch, 2, frames, mel_bins), got {tuple(mel.shape)}")
        b, s, t, m = mel.shape
        return mel.transpose(0, 2, 1, 3).reshape(b, t, s * m)
    if mel.ndim == 3:
        return mel
    raise ValueError(f"mel must be (batch, 2, frames, mel_bins) or (batch, frames, mel_bins), got {tuple(mel.shape)}")


class Vocoder(nn.Module):
    """HiFi-GAN ("1") or BigVGAN v2 ("AMP1") generator: 128 mel channels (2 x 64) -> stereo."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.output_sampling_rate = config.output_sampling_rate
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.num_upsamples = len(config.upsample_rates)
        self.use_tanh_at_final = config.use_tanh_at_final
        self.apply_final_activation = config.apply_final_activation
        self.is_amp = config.resblock == "AMP1"
        initial = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(128, initial, kernel_size=7, padding=3)
        self.ups = [
            nn.ConvTranspose1d(
                initial // 2**i,
                initial // 2 ** (i + 1),
                k,
                stride=s,
                padding=(k - s) // 2,
            )
            for i, (s, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True))
        ]
        self.resblocks = []
        for i in range(self.num_upsamples):
            ch = initial // 2 ** (i + 1)
            for kernel_size, dilations in zip(
                config.resblock_kernel_sizes,
                config.resblock_dilation_sizes,
                strict=True,
            ):
                if self.is_amp:
                    self.resblocks.append(AMPBlock1(ch, kernel_size, dilations, activation=config.activation))
                else:
                    self.resblocks.append(ResBlock1(ch, kernel_size, dilations))
        final_channels = initial // 2**self.num_upsamples
        if self.is_amp:
            self.act_post = Activation1d(SnakeBeta(final_channels))
        self.conv_post = nn.Conv1d(final_channels, 2, kernel_size=7, padding=3, bias=config.use_bias_at_final)

    def generate(self, x: mx.array) -> mx.array:
        """Channels-last mel (B, frames, 128) -> waveform (B, samples, 2)."""
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            if not self.is_amp:
                x = nn.leaky_relu(x, LRELU_SLOPE)
            x = up(x)
            # The resblocks of one level all read the same input; their outputs are averaged.
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
        x = self.act_post(x) if self.is_amp else nn.leaky_relu(x, 0.01)
        x = self.conv_post(x)
        if self.apply_final_activation:
            x = mx.tanh(x) if self.use_tanh_at_final else mx.clip(x, -1, 1)
        return x

    def __call__(self, mel: mx.array) -> mx.array:
        """Mel (B, 2, frames, mel_bins) -> waveform (B, 2, samples)."""
        return self.generate(mel_to_channels_last(mel)).transpose(0, 2, 1)


class STFTFn(nn.Module):
    """Causal STFT as a strided convolution with the checkpoint's DFT x Hann bases.

    `forward_basis` is (2·n_freqs, filter_length, 1) in MLX layout, real rows then imaginary;
    `inverse_basis` is carried only because the checkpoint stores it.
    """

    def __init__(self, filter_length: int, hop_length: int, win_length: int):
        super().__init__()
        self.hop_length = hop_length
        self.win_length = win_length
        n_freqs = filter_length // 2 + 1
        self.forward_basis = mx.zeros((2 * n_freqs, filter_length, 1))
        self.inverse_basis = mx.zeros((2 * n_freqs, filter_length, 1))

    def magnitude(self, y: mx.array) -> mx.array:
        """Waveforms (N, samples) -> |STFT| (N, frames, n_freqs), left padding only (no lookahead).

        The strided one-channel convolution of the reference, as frames @ basis (a matmul).
        """
        left_pad = max(0, self.win_length - self.hop_length)
        y = mx.pad(y, [(0, 0), (left_pad, 0)])
        filter_length = self.forward_basis.shape[1]
        n_frames = (y.shape[-1] - filter_length) // self.hop_length + 1
        index = mx.arange(n_frames)[:, None] * self.hop_length + mx.arange(filter_length)[None, :]
        frames = mx.take(y, index, axis=-1)  # (N, frames, filter_length)
        spec = frames @ self.forward_basis[..., 0].astype(y.dtype).T
        n_freqs = spec.shape[-1] // 2
        real, imag = spec[..., :n_freqs], spec[..., n_freqs:]
        return mx.sqrt(real * real + imag * imag)


class MelSTFT(nn.Module):
    """Causal log-mel spectrogram with the checkpoint's own filterbank (`mel_basis`)."""

    def __init__(self, filter_length: int, hop_length: int, win_length: int, n_mel_channels: int):
        super().__init__()
        self.stft_fn = STFTFn(filter_length, hop_length, win_length)
        self.mel_basis = mx.zeros((n_mel_channels, filter_length // 2 + 1))

    def log_mel(self, y: mx.array) -> mx.array:
        """Waveforms (N, samples) -> log mel (N, frames, n_mels)."""
        magnitude = self.stft_fn.magnitude(y)
        mel = magnitude @ self.mel_basis.astype(magnitude.dtype).T
        return mx.log(mx.maximum(mel, 1e-5))


class VocoderWithBWE(nn.Module):
    """Vocoder at the low rate, then bandwidth extension: the BWE generator turns the causal mel
    of that waveform into a residual added to a sinc-upsampled copy, clipped to [-1, 1]."""

    def __init__(
        self,
        vocoder: Vocoder,
        bwe_generator: Vocoder,
        mel_stft: MelSTFT,
        bwe: BandwidthExtensionConfig,
    ):
        super().__init__()
        self.vocoder = vocoder
        self.bwe_generator = bwe_generator
        self.mel_stft = mel_stft
        self.input_sampling_rate = bwe.input_sampling_rate
        self.output_sampling_rate = bwe.output_sampling_rate
        self.hop_length = bwe.hop_length
        # Computed, not stored in the checkpoint ('_' keeps it out of the parameters).
        self._resampler = UpSample1d(bwe.output_sampling_rate // bwe.input_sampling_rate, window_type="hann")

    def __call__(self, mel: mx.array) -> mx.array:
        """Mel (B, 2, frames, mel_bins) -> waveform (B, 2, samples) at the output rate."""
        x = self.vocoder.generate(mel_to_channels_last(mel))  # (B, L, 2)
        b, length, channels = x.shape
        output_length = length * self.output_sampling_rate // self.input_sampling_rate
        remainder = length % self.hop_length
        if remainder:
            x = mx.pad(x, [(0, 0), (0, self.hop_length - remainder), (0, 0)])
        per_channel = x.transpose(0, 2, 1).reshape(b * channels, -1)
        log_mel = self.mel_stft.log_mel(per_channel)  # (B·2, frames, n_mels)
        frames, n_mels = log_mel.shape[1:]
        bwe_input = (
            log_mel.reshape(b, channels, frames, n_mels).transpose(0, 2, 1, 3).reshape(b, frames, channels * n_mels)
        )
        residual = self.bwe_generator.generate(bwe_input)
        skip = self._resampler(x)
        if residual.shape != skip.shape:
            raise ValueError(
                f"BWE residual {residual.shape} != upsampled skip {skip.shape}; check the vocoder.bwe config"
            )
        return mx.clip(residual + skip, -1, 1)[:, :output_length].transpose(0, 2, 1)


def build_vocoder(config: VocoderConfig) -> Vocoder | VocoderWithBWE:
    vocoder = Vocoder(config.vocoder)
    if config.bwe is None:
        return vocoder
    mel_stft = MelSTFT(config.bwe.n_fft, config.bwe.hop_length, config.bwe.n_fft, config.bwe.num_mels)
    return VocoderWithBWE(vocoder, Vocoder(config.bwe_generator), mel_stft, config.bwe)


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """ltx-core vocoder tensors ('vocoder.' stripped once) -> this module's layouts.

    Conv1d (O, I, K) -> (O, K, I); ConvTranspose1d (I, O, K) -> (O, K, I); the (1, 1, K)
    resampling filters -> (K,); STFT bases (2F, 1, N) -> (2F, N, 1).
    """
    converted = {}
    for key, value in weights.items():
        name = key.rsplit(".", 1)[-1]
        if name == "filter":
            converted[key] = value.reshape(-1)
        elif name in ("forward_basis", "inverse_basis"):
            converted[key] = value.transpose(0, 2, 1)
        elif name == "weight" and value.ndim == 3:
            is_transposed = ".ups." in f".{key}"
            converted[key] = value.transpose(1, 2, 0) if is_transposed else value.transpose(0, 2, 1)
        else:
            converted[key] = value
    return converted

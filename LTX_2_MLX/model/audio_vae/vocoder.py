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

from LTX_2_MLX.model.audio_vae import snake_kernel
from LTX_2_MLX.model.audio_vae.model_configurator import (
    BandwidthExtensionConfig,
    GeneratorConfig,
    VocoderConfig,
)
from LTX_2_MLX.model.audio_vae.resnet import LRELU_SLOPE, ResBlock1, add_biased
from LTX_2_MLX.model.audio_vae.snake_kernel import FilterBank


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


# ---------------------------------------------------------------------------------------------
# Anti-aliased resampling (kaiser- or Hann-windowed sinc filters) on (B, L, C). One filter serves
# every channel, so each output phase of a resampler is a sum of shifted slices of its input times
# scalar taps: compiled element-wise kernels with the taps as constants, no per-channel convolution.
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


def _tree_sum(terms: list[mx.array]) -> mx.array:
    """Pairwise sum: depth log2(n) instead of n, so that mx.compile, which ends a fused kernel at
    depth 11 (or 24 inputs), keeps a whole filter and the activation after it in one kernel."""
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = paired + terms[2 * len(paired) :]
    return terms[0]


@cache
def _clamped_positions(length: int, before: int, after: int) -> mx.array:
    """Gather indices that pad an axis of `length` by replicating its edges: `before` copies of the
    first sample, the axis, `after` copies of the last (one kernel; a mode="edge" pad takes four)."""
    return mx.array(np.clip(np.arange(-before, length + after), 0, length - 1).astype(np.int32))


def upsample_filter_bank(taps: tuple[float, ...], ratio: int, pad: int, pad_left: int) -> FilterBank:
    """UpSample1d as a filter bank on its input: output sample ratio·n + p is
    sum(vector[p] · x[clamp(n + shift)] for shift, vector in bank), clamp being replicate padding.

    The reference pads x by `pad` replicated samples, takes ratio · conv_transpose1d(stride=ratio)
    and crops `pad_left` samples, so x[n + shift] meets filter tap p + pad_left - ratio·(pad + shift)
    in output sample ratio·n + p (no tap: 0). The gain `ratio` is folded into the vectors.
    """
    bank = []
    for shift in range(-pad - len(taps), pad + len(taps) + 1):
        indices = [p + pad_left - ratio * (pad + shift) for p in range(ratio)]
        if any(0 <= k < len(taps) for k in indices):
            bank.append((shift, tuple(ratio * taps[k] if 0 <= k < len(taps) else 0.0 for k in indices)))
    if not -pad <= bank[0][0] <= bank[-1][0] <= pad:
        raise ValueError(
            f"UpSample1d(kernel_size={len(taps)}, ratio={ratio}) with pad={pad}, pad_left={pad_left} reads past its "
            "replicate padding; use the reference's geometry"
        )
    return tuple(bank)


def _column(values: tuple[float, ...] | list[float]) -> mx.array:
    """(n, 1) float32, one value per phase (built in that shape: [:, None] is a graph node per call)."""
    return mx.array([[value] for value in values], dtype=mx.float32)


def bank_gains(bank: FilterBank) -> list[float]:
    """Each phase's sum of taps: the bank's output for a constant input of 1."""
    return [sum(vector[phase] for _, vector in bank) for phase in range(len(bank[0][1]))]


def _polyphase_upsample(
    x: mx.array, source_index: mx.array, bank: FilterBank, before: int, bias_term: mx.array | None = None
) -> mx.array:
    """(B, L, C) -> (B, L, ratio, C) in float32, phases along axis 2 (reshape to (B, ratio·L, C));
    `source_index` is _clamped_positions(L, before, ...). `bias_term`, (ratio, C) float32, is the
    bank applied to a per-channel bias b added to x first (padding and filter are linear, so that is
    x upsampled plus b times bank_gains)."""
    length = x.shape[1]
    source = mx.take(x, source_index, axis=1)[:, :, None]
    terms = []
    for shift, vector in bank:
        window = source[:, before + shift : before + shift + length].astype(mx.float32)
        terms.append(_column(vector) * window)
    if bias_term is not None:
        terms.append(bias_term)
    return _tree_sum(terms)


def _strided_lowpass(x: mx.array, source_index: mx.array, taps: tuple[float, ...], stride: int) -> mx.array:
    """LowPassFilter1d in float32: `source_index` replicate-pads x, then sum(tap · strided slice)."""
    source = mx.take(x, source_index, axis=1)
    span = stride * ((source.shape[1] - len(taps)) // stride) + 1
    return _tree_sum([tap * source[:, k : k + span : stride].astype(mx.float32) for k, tap in enumerate(taps)])


def snake(x: mx.array, alpha: mx.array, inverse_beta: mx.array) -> mx.array:
    """x + sin²(αx)/β per channel (the last axis), given α and 1/(β + eps) (Snake.coefficients)."""
    return x + inverse_beta * mx.square(mx.sin(x * alpha))


def _upsample(x: mx.array, source_index: mx.array, *, bank: FilterBank, before: int) -> mx.array:
    b, length, c = x.shape
    return _polyphase_upsample(x, source_index, bank, before).astype(x.dtype).reshape(b, -1, c)


def _anti_aliased_snake(
    x: mx.array,
    up_index: mx.array,
    down_index: mx.array,
    alpha: mx.array,
    inverse_beta: mx.array,
    *bias_term: mx.array,
    bank: FilterBank,
    before: int,
    down_taps: tuple[float, ...],
) -> mx.array:
    """Upsample, snake, low-pass and downsample (of x plus the optional per-channel bias) in four
    kernels: two gathers (the replicate paddings), the filter bank with the bias and the snake (the
    upsampled signal is written once, in float32), and the strided low-pass."""
    b, length, c = x.shape
    upsampled = _polyphase_upsample(x, up_index, bank, before, *bias_term)
    activated = snake(upsampled, alpha, inverse_beta).reshape(b, -1, c)
    return _strided_lowpass(activated, down_index, down_taps, len(bank[0][1])).astype(x.dtype)


def _bank_reach(bank: FilterBank) -> tuple[int, int]:
    """Samples of x the bank reads before and after it."""
    return max(0, -bank[0][0]), max(0, bank[-1][0])


@cache
def _compiled_upsample(taps: tuple[float, ...], ratio: int, pad: int, pad_left: int):
    """(compiled UpSample1d, its reach): one per filter, shared by every module that has it."""
    bank = upsample_filter_bank(taps, ratio, pad, pad_left)
    before, after = _bank_reach(bank)
    return mx.compile(partial(_upsample, bank=bank, before=before)), before, after


@cache
def _compiled_activation(up_taps: tuple, down_taps: tuple, ratio: int, pad: int, pad_left: int):
    """(compiled Activation1d, the upsampler's bank, its reach, its bank_gains), one per filter pair."""
    bank = upsample_filter_bank(up_taps, ratio, pad, pad_left)
    before, after = _bank_reach(bank)
    compiled = partial(_anti_aliased_snake, bank=bank, before=before, down_taps=down_taps)
    return mx.compile(compiled), bank, before, after, bank_gains(bank)


class PerLoadedArrays:
    """A value derived from some arrays (a module's loaded parameters), computed again only when
    one of them is replaced: work a module would otherwise redo at every call."""

    def __init__(self, compute):
        self._compute, self._sources, self._value = compute, (), None

    def __call__(self, *sources):
        if len(sources) != len(self._sources) or any(a is not b for a, b in zip(sources, self._sources)):
            self._sources, self._value = sources, self._compute(*sources)
        return self._value


class SincFilter(nn.Module):
    """A module with a `filter` buffer (from the checkpoint, or computed) that runs as constants of
    compiled kernels: read to the host once per loaded array."""

    def __init__(self, filter_: np.ndarray):
        super().__init__()
        self.filter = mx.array(filter_)
        self._taps = PerLoadedArrays(lambda filter_: tuple(filter_.astype(mx.float32).tolist()))

    def taps(self) -> tuple[float, ...]:
        return self._taps(self.filter)


class LowPassFilter1d(SincFilter):
    """Replicate-padded depthwise low-pass filter with `stride`; Activation1d runs it."""

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, kernel_size: int = 12):
        if cutoff < 0:
            raise ValueError("Minimum cutoff must be larger than zero.")
        if cutoff > 0.5:
            raise ValueError("A cutoff above 0.5 does not make sense.")
        super().__init__(kaiser_sinc_filter1d(cutoff, half_width, kernel_size))
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.stride = stride


class UpSample1d(SincFilter):
    """Sinc-interpolating upsampler by an integer ratio (kaiser: BigVGAN; hann: torchaudio's),
    (B, L, C) -> (B, ratio·L, C)."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None, window_type: str = "kaiser"):
        if window_type == "hann":
            filter_, width = hann_sinc_filter1d(ratio)
            kernel_size = filter_.shape[0]
            pad, pad_left, pad_right = width, 2 * width * ratio, kernel_size - ratio
        else:
            kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
            pad = kernel_size // ratio - 1
            pad_left = pad * ratio + (kernel_size - ratio) // 2
            pad_right = pad * ratio + (kernel_size - ratio + 1) // 2
            filter_ = kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, kernel_size)
        if (2 * pad - 1) * ratio + kernel_size - pad_left - pad_right != 0:
            raise ValueError(f"UpSample1d(ratio={ratio}, kernel_size={kernel_size}) would not give ratio·L samples")
        super().__init__(filter_)
        self.ratio, self.kernel_size = ratio, kernel_size
        self.pad, self.pad_left, self.pad_right = pad, pad_left, pad_right

    def __call__(self, x: mx.array) -> mx.array:
        compiled, before, after = _compiled_upsample(self.taps(), self.ratio, self.pad, self.pad_left)
        return compiled(x, _clamped_positions(x.shape[1], before, after))


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        super().__init__()
        kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=kernel_size)


class Snake(nn.Module):
    """x + sin²(αx)/α per channel, α stored as log α."""

    def __init__(self, in_features: int, alpha_logscale: bool = True):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = mx.zeros((in_features,)) if alpha_logscale else mx.ones((in_features,))
        self._coefficients = PerLoadedArrays(self._compute_coefficients)

    def alpha_beta(self) -> tuple[mx.array, mx.array]:
        return self.alpha, self.alpha

    def coefficients(self) -> tuple[mx.array, mx.array]:
        """(α, 1/(β + 1e-9)) in float32, computed once per loaded parameter arrays rather than on
        every call (two exps and a division: three kernels per activation)."""
        return self._coefficients(*self.alpha_beta())

    def _compute_coefficients(self, alpha: mx.array, beta: mx.array) -> tuple[mx.array, mx.array]:
        alpha, beta = alpha.astype(mx.float32), beta.astype(mx.float32)
        if self.alpha_logscale:
            alpha, beta = mx.exp(alpha), mx.exp(beta)
        return alpha, 1.0 / (beta + 1e-9)

    def __call__(self, x: mx.array) -> mx.array:
        return snake(x.astype(mx.float32), *self.coefficients()).astype(x.dtype)


class SnakeBeta(Snake):
    """x + sin²(αx)/β per channel, α and β stored as logs."""

    def __init__(self, in_features: int, alpha_logscale: bool = True):
        super().__init__(in_features, alpha_logscale)
        self.beta = mx.zeros((in_features,)) if alpha_logscale else mx.ones((in_features,))

    def alpha_beta(self) -> tuple[mx.array, mx.array]:
        return self.alpha, self.beta


class Activation1d(nn.Module):
    """Activation at twice the rate: upsample 2x, activate, low-pass and downsample 2x, as one
    compiled function in float32 (the reference rounds to the working dtype after each step);
    see _anti_aliased_snake. In bf16 on a CUDA GPU, one kernel (snake_kernel)."""

    def __init__(
        self,
        activation: Snake,
        up_ratio: int = 2,
        down_ratio: int = 2,
        up_kernel_size: int = 12,
        down_kernel_size: int = 12,
    ):
        super().__init__()
        if up_ratio != down_ratio:
            raise ValueError(f"Activation1d resamples back to the input rate: up_ratio={up_ratio} != {down_ratio=}")
        self.act = activation
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)
        # The bank applied to the bias, once per bias array: a cast inside the compiled kernel
        # would sit past its depth limit.
        self._bias_term = PerLoadedArrays(lambda bias, gains: _column(gains) * bias.astype(mx.float32))

    def __call__(self, x: mx.array, bias: mx.array | None = None) -> mx.array:
        """The activation of x + bias (the bias of the convolution before, added here rather than
        in a kernel of its own)."""
        up, lowpass = self.upsample, self.downsample.lowpass
        down_taps = lowpass.taps()
        compiled, bank, before, after, gains = _compiled_activation(up.taps(), down_taps, up.ratio, up.pad, up.pad_left)
        coefficients = self.act.coefficients()
        fused = snake_kernel.anti_aliased_snake(
            x, bias, *coefficients, bank, down_taps, lowpass.pad_left, lowpass.pad_right
        )
        if fused is not None:
            return fused
        length = x.shape[1]
        up_index = _clamped_positions(length, before, after)
        down_index = _clamped_positions(up.ratio * length, lowpass.pad_left, lowpass.pad_right)
        bias_term = (self._bias_term(bias, gains),) if bias is not None else ()
        return compiled(x, up_index, down_index, *coefficients, *bias_term)


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
            # Each convolution's bias is added in the kernel after it: a2's filter bank, the residual sum.
            hidden = a2(mx.conv1d(a1(x), c1.weight, padding=c1.padding, dilation=c1.dilation), c1.bias)
            x = add_biased(x, mx.conv1d(hidden, c2.weight, padding=c2.padding), c2.bias)
        return x


class PhaseConvTranspose1d(nn.Module):
    """nn.ConvTranspose1d computed as one ordinary convolution; bias (O,), and the weight in the
    layout of `phase_weight` (the loader converts the file's transposed-convolution weight).

    Output sample r*s + j - padding of a stride-s transposed convolution is the sum over m of
    x[r - m] · w[m*s + j]: for each phase j a plain convolution of x with taps m. The s phases
    are stacked as s*O output channels of one Conv1d over x padded by M - 1 = ceil(K/s) - 1 on
    both sides, then interleaved by a reshape. Same products as the transposed convolution,
    without a zero-inserted input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        scale = math.sqrt(1 / (in_channels * kernel_size))
        weight = mx.random.uniform(-scale, scale, (out_channels, kernel_size, in_channels))
        self.weight = phase_weight(weight, stride)
        self.bias = mx.zeros((out_channels,))
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __call__(self, x: mx.array) -> mx.array:
        out_channels = self.bias.shape[0]
        batch, length, _ = x.shape
        phases = mx.conv1d(x, self.weight, padding=self.weight.shape[1] - 1)
        interleaved = phases.reshape(batch, phases.shape[1] * self.stride, out_channels)
        out_length = (length - 1) * self.stride - 2 * self.padding + self.kernel_size
        return interleaved[:, self.padding : self.padding + out_length] + self.bias


def phase_weight(weight: mx.array, stride: int) -> mx.array:
    """Transposed-convolution weight (O, K, I) -> Conv1d weight (s*O, M, I), M = ceil(K/s):
    output channel j*O + o, tap t holds w[o, (M - 1 - t)*s + j] (zero past K)."""
    out_channels, kernel_size, in_channels = weight.shape
    taps = -(-kernel_size // stride)
    padded = mx.pad(weight, [(0, 0), (0, taps * stride - kernel_size), (0, 0)])
    by_phase = padded.reshape(out_channels, taps, stride, in_channels).transpose(2, 0, 1, 3)[:, :, ::-1]
    return mx.contiguous(by_phase.reshape(stride * out_channels, taps, in_channels))


@partial(mx.compile, shapeless=True)
def _average(outputs: list[mx.array]) -> mx.array:
    """The mean of the resblock outputs of one level, summed in order as the reference does."""
    total = outputs[0]
    for output in outputs[1:]:
        total = total + output
    return total / len(outputs)


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
            PhaseConvTranspose1d(initial // 2**i, initial // 2 ** (i + 1), k, stride=s, padding=(k - s) // 2)
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
            x = _average([block(x) for block in blocks])
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


def sanitize(weights: dict[str, mx.array], config: VocoderConfig) -> dict[str, mx.array]:
    """ltx-core vocoder tensors ('vocoder.' stripped once) -> this module's layouts.

    Conv1d (O, I, K) -> (O, K, I); ConvTranspose1d (I, O, K) -> phase_weight's (s*O, M, I) with
    the stride of its generator's level; the (1, 1, K) resampling filters -> (K,); STFT bases
    (2F, 1, N) -> (2F, N, 1).
    """
    converted = {}
    for key, value in weights.items():
        name = key.rsplit(".", 1)[-1]
        if name == "filter":
            converted[key] = value.reshape(-1)
        elif name in ("forward_basis", "inverse_basis"):
            converted[key] = value.transpose(0, 2, 1)
        elif name == "weight" and value.ndim == 3 and ".ups." in f".{key}":
            generator = config.bwe_generator if key.startswith("bwe_generator.") else config.vocoder
            level = int(f".{key}".split(".ups.")[1].split(".")[0])
            converted[key] = phase_weight(value.transpose(1, 2, 0), generator.upsample_rates[level])
        elif name == "weight" and value.ndim == 3:
            # Stored in MLX's order: a transposed view would be copied by every convolution call.
            converted[key] = mx.contiguous(value.transpose(0, 2, 1))
        else:
            converted[key] = value
    return converted

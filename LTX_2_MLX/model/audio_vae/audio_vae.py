"""The audio VAE: log-mel spectrogram (B, 2, T, 64) <-> latent (B, 8, T/4, 16).

Arrays are channels-last inside, (B, T, F, C); `__call__` takes and returns ltx-core's
(B, C, T, F).
"""

import mlx.core as mx
from mlx import nn

from LTX_2_MLX.model.audio_vae.attention import AttentionType, make_attn
from LTX_2_MLX.model.audio_vae.causal_conv_2d import make_conv2d
from LTX_2_MLX.model.audio_vae.causality_axis import CausalityAxis
from LTX_2_MLX.model.audio_vae.downsample import build_downsampling_path
from LTX_2_MLX.model.audio_vae.model_configurator import AudioVAEConfig
from LTX_2_MLX.model.audio_vae.ops import (
    Audio,
    AudioProcessor,
    NormType,
    PerChannelStatistics,
    build_normalization_layer,
)
from LTX_2_MLX.model.audio_vae.resnet import ResnetBlock
from LTX_2_MLX.model.audio_vae.upsample import build_upsampling_path

LATENT_DOWNSAMPLE_FACTOR = 4


class MidBlock(nn.Module):
    def __init__(
        self,
        channels: int,
        norm_type: NormType,
        causality_axis: CausalityAxis,
        attn_type,
        add_attention,
    ):
        super().__init__()
        self.block_1 = ResnetBlock(
            in_channels=channels,
            out_channels=channels,
            norm_type=norm_type,
            causality_axis=causality_axis,
        )
        self.attn_1 = make_attn(channels, attn_type=attn_type, norm_type=norm_type) if add_attention else nn.Identity()
        self.block_2 = ResnetBlock(
            in_channels=channels,
            out_channels=channels,
            norm_type=norm_type,
            causality_axis=causality_axis,
        )

    def __call__(self, x: mx.array) -> mx.array:
        return self.block_2(self.attn_1(self.block_1(x)))


def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """ltx-core encoder/decoder tensors (prefix stripped) -> this module's keys and layouts:
    Conv2d weights (O, I, kH, kW) -> (O, kH, kW, I), statistics renamed."""
    converted = {}
    statistics = {}
    for key, value in weights.items():
        if key.startswith("per_channel_statistics."):
            statistics[key.split(".", 1)[1]] = value
        elif key.endswith(".weight") and value.ndim == 4:
            converted[key] = mx.contiguous(value.transpose(0, 2, 3, 1))  # not copied per call
        else:
            converted[key] = value
    converted.update({f"per_channel_statistics.{k}": v for k, v in PerChannelStatistics.sanitize(statistics).items()})
    return converted


def _to_channels_last(x: mx.array) -> mx.array:
    return x.transpose(0, 2, 3, 1)


def _to_channels_first(x: mx.array) -> mx.array:
    return x.transpose(0, 3, 1, 2)


class AudioEncoder(nn.Module):
    """Log-mel spectrogram (B, in_channels, T, mel_bins) -> normalised latent means
    (B, z_channels, T', mel_bins / 2^(levels-1))."""

    def __init__(self, config: AudioVAEConfig):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.mel_hop_length = config.mel_hop_length
        self.n_fft = config.n_fft
        self.is_causal = config.is_causal
        self.mel_bins = config.mel_bins
        self.z_channels = config.z_channels
        self.double_z = config.double_z
        self.per_channel_statistics = PerChannelStatistics(latent_channels=config.ch)
        norm_type, axis, attn_type = config.norm, config.causality, config.attention
        self.conv_in = make_conv2d(config.in_channels, config.ch, kernel_size=3, stride=1, causality_axis=axis)
        self.down, block_in = build_downsampling_path(
            ch=config.ch,
            ch_mult=config.ch_mult,
            num_res_blocks=config.num_res_blocks,
            resolution=config.resolution,
            dropout=config.dropout,
            norm_type=norm_type,
            causality_axis=axis,
            attn_type=attn_type,
            attn_resolutions=set(config.attn_resolutions),
            resamp_with_conv=config.resamp_with_conv,
        )
        self.mid = MidBlock(block_in, norm_type, axis, attn_type, config.mid_block_add_attention)
        self.norm_out = build_normalization_layer(block_in, normtype=norm_type)
        out_channels = 2 * config.z_channels if config.double_z else config.z_channels
        self.conv_out = make_conv2d(block_in, out_channels, kernel_size=3, stride=1, causality_axis=axis)

    def encode_features(self, h: mx.array) -> mx.array:
        """Channels-last (B, T, F, in_channels) -> un-normalised (B, T', F', out) features."""
        h = self.conv_in(h)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(nn.silu(self.norm_out(h)))

    def __call__(self, spectrogram: mx.array) -> mx.array:
        if spectrogram.ndim != 4 or spectrogram.shape[1] != self.config.in_channels:
            raise ValueError(
                f"spectrogram must be (batch, {self.config.in_channels}, frames, mel_bins), got "
                f"{tuple(spectrogram.shape)}"
            )
        h = self.encode_features(_to_channels_last(spectrogram))
        # double_z: the first half of the channels are the means, the rest the log-variances.
        # The statistics apply per (channel, mel bin), as on ltx-core's patchified latent.
        means = h[..., : h.shape[-1] // 2] if self.double_z else h
        return _to_channels_first(self.per_channel_statistics.normalize(means))


class AudioDecoder(nn.Module):
    """Normalised latent (B, z_channels, T', F') -> log-mel spectrogram (B, out_ch, T, mel_bins),
    T = 4·T' - 3 when causal (4·T' otherwise)."""

    def __init__(self, config: AudioVAEConfig):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.mel_hop_length = config.mel_hop_length
        self.is_causal = config.is_causal
        self.mel_bins = config.mel_bins
        self.out_ch = config.out_ch
        self.z_channels = config.z_channels
        self.causality_axis = config.causality
        self.per_channel_statistics = PerChannelStatistics(latent_channels=config.ch)
        # The decoder always uses vanilla attention, whatever the config says (as ltx-core).
        norm_type, axis, attn_type = (
            config.norm,
            config.causality,
            AttentionType.VANILLA,
        )
        base_block_channels = config.ch * config.ch_mult[-1]
        self.conv_in = make_conv2d(
            config.z_channels,
            base_block_channels,
            kernel_size=3,
            stride=1,
            causality_axis=axis,
        )
        self.mid = MidBlock(
            base_block_channels,
            norm_type,
            axis,
            attn_type,
            config.mid_block_add_attention,
        )
        self.up, final_block_channels = build_upsampling_path(
            ch=config.ch,
            ch_mult=config.ch_mult,
            num_res_blocks=config.num_res_blocks,
            resolution=config.resolution,
            dropout=config.dropout,
            norm_type=norm_type,
            causality_axis=axis,
            attn_type=attn_type,
            attn_resolutions=set(config.attn_resolutions),
            resamp_with_conv=True,
            initial_block_channels=base_block_channels,
        )
        self.norm_out = build_normalization_layer(final_block_channels, normtype=norm_type)
        self.conv_out = make_conv2d(
            final_block_channels,
            config.out_ch,
            kernel_size=3,
            stride=1,
            causality_axis=axis,
        )

    def target_shape(self, latent_frames: int, latent_mel_bins: int) -> tuple[int, int]:
        """(frames, mel_bins) of the spectrogram decoded from a latent of that size."""
        frames = latent_frames * LATENT_DOWNSAMPLE_FACTOR
        if self.causality_axis != CausalityAxis.NONE:
            frames = max(frames - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)
        return frames, self.mel_bins if self.mel_bins is not None else latent_mel_bins

    def decode_features(self, h: mx.array) -> mx.array:
        """Channels-last de-normalised latent (B, T', F', z) -> (B, T, F, out_ch), uncropped."""
        h = self.mid(self.conv_in(h))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(nn.silu(self.norm_out(h)))

    def __call__(self, sample: mx.array) -> mx.array:
        if sample.ndim != 4 or sample.shape[1] != self.z_channels:
            raise ValueError(
                f"audio latent must be (batch, {self.z_channels}, frames, mel_bins), got {tuple(sample.shape)}"
            )
        target_frames, target_bins = self.target_shape(sample.shape[2], sample.shape[3])
        h = self.per_channel_statistics.un_normalize(_to_channels_last(sample))
        h = self.decode_features(h)
        # Crop, then zero-pad, to exactly (target_frames, target_bins).
        h = h[:, :target_frames, :target_bins, : self.out_ch]
        pad_t, pad_f = target_frames - h.shape[1], target_bins - h.shape[2]
        if pad_t > 0 or pad_f > 0:
            h = mx.pad(h, [(0, 0), (0, max(pad_t, 0)), (0, max(pad_f, 0)), (0, 0)])
        return _to_channels_first(h)


class AudioVAE(nn.Module):
    """The encoder and/or decoder of one checkpoint (each keeps its own copy of the statistics,
    as in ltx-core where they are built separately from the same tensors)."""

    def __init__(self, config: AudioVAEConfig, encoder: bool = True, decoder: bool = True):
        super().__init__()
        self.config = config
        self.encoder = AudioEncoder(config) if encoder else None
        self.decoder = AudioDecoder(config) if decoder else None

    def encode(self, spectrogram: mx.array) -> mx.array:
        if self.encoder is None:
            raise ValueError("this AudioVAE was loaded without its encoder; load it with encoder=True")
        return self.encoder(spectrogram)

    def decode(self, latent: mx.array) -> mx.array:
        if self.decoder is None:
            raise ValueError("this AudioVAE was loaded without its decoder; load it with decoder=True")
        return self.decoder(latent)


def encode_audio(
    audio: Audio,
    audio_encoder: AudioEncoder,
    audio_processor: AudioProcessor | None = None,
) -> mx.array:
    """Waveform (B, channels, samples) -> normalised audio latent (B, z, frames, mel_bins/4)."""
    if audio_processor is None:
        if audio_encoder.mel_bins is None:
            raise ValueError("the audio VAE config names no mel_bins; pass an AudioProcessor built with mel_bins=64")
        audio_processor = AudioProcessor(
            target_sample_rate=audio_encoder.sample_rate,
            mel_bins=audio_encoder.mel_bins,
            mel_hop_length=audio_encoder.mel_hop_length,
            n_fft=audio_encoder.n_fft,
        )
    mel_spectrogram = audio_processor.waveform_to_mel(audio)
    return audio_encoder(mel_spectrogram.astype(audio_encoder.conv_in.conv.weight.dtype))


def decode_audio(latent: mx.array, audio_decoder: AudioDecoder, vocoder) -> Audio:
    """Audio latent -> float32 waveform (channels, samples) for batch 1 (as ltx-core's squeeze(0);
    (B, channels, samples) otherwise) at the vocoder's output rate."""
    decoded = audio_decoder(latent)
    waveform = vocoder(decoded)
    if waveform.shape[0] == 1:
        waveform = waveform[0]
    return Audio(waveform=waveform.astype(mx.float32), sampling_rate=vocoder.output_sampling_rate)

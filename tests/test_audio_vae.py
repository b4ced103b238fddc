"""Parity of the MLX audio VAE and vocoder with ltx-core's AudioEncoder / AudioDecoder /
Vocoder / VocoderWithBWE.

Tiny seeded reference models keep the real structure (three levels: 4x time and mel
compression, causal convolutions along time, pixel norm, attention, HiFi-GAN and BigVGAN v2 +
bandwidth-extension vocoders) with few channels; they are built through ltx-core's configurators
from tiny `audio_vae` / `vocoder` config sections, saved as official single-file checkpoints and
loaded through `load_audio_vae` / `load_vocoder`.

The log-mel front end cannot be compared with torchaudio (not installed: it would pull in a
second torch). It is compared with `reference_log_mel` below, a torch-only transcription of
torchaudio's MelSpectrogram formulas (torch.stft, melscale_fbanks with Slaney scale and norm),
written from torchaudio's source; that reference also feeds ltx-core's own `encode_audio`.
"""

import math
import sys
import types
from functools import partial

import mlx.core as mx
import pytest
import torch
from mlx.utils import tree_flatten
from reference import (
    assert_cosine,
    assert_matches,
    prefixed,
    save_checkpoint,
    seed_module_,
    to_mx,
)

if "torchaudio" not in sys.modules:
    # ltx_core.model.audio_vae imports torchaudio (for AudioProcessor) at import time; it is not
    # installed and the modules compared here never call it.
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")

from ltx_core.model.audio_vae import (
    AudioDecoderConfigurator,
    AudioEncoderConfigurator,
    VocoderConfigurator,
)
from ltx_core.model.audio_vae import decode_audio as ref_decode_audio
from ltx_core.model.audio_vae import encode_audio as ref_encode_audio
from ltx_core.model.audio_vae.vocoder import UpSample1d as RefUpSample1d
from ltx_core.model.audio_vae.vocoder import (
    kaiser_sinc_filter1d as ref_kaiser_sinc_filter1d,
)
from ltx_core.types import Audio as RefAudio

from LTX_2_MLX.loader import CheckpointError
from LTX_2_MLX.loader.audio_vae import load_audio_vae, load_vocoder
from LTX_2_MLX.model.audio_vae import (
    Audio,
    AudioProcessor,
    AudioVAEConfig,
    VocoderConfig,
    decode_audio,
    encode_audio,
)
from LTX_2_MLX.model.audio_vae.ops import melscale_fbanks, resample
from LTX_2_MLX.model.audio_vae.vocoder import PhaseConvTranspose1d, phase_weight

MEL_BINS = 16
SAMPLE_RATE = 16000
HOP = 40
N_FFT = 128


def tiny_audio_vae_config() -> dict:
    """Three levels (4x time and mel), causal along time, pixel norm, attention at the middle
    level and in the mid block; 4 latent channels x 4 latent mel bins = ch = 16 statistics."""
    return {
        "model": {
            "params": {
                "ddconfig": {
                    "ch": 16,
                    "out_ch": 2,
                    "ch_mult": [1, 2, 4],
                    "num_res_blocks": 2,
                    "attn_resolutions": [16],
                    "resolution": 32,
                    "z_channels": 4,
                    "double_z": True,
                    "in_channels": 2,
                    "mel_bins": MEL_BINS,
                    "norm_type": "pixel",
                    "causality_axis": "height",
                    "mid_block_add_attention": True,
                    "dropout": 0.0,
                },
                "sampling_rate": SAMPLE_RATE,
            }
        },
        "preprocessing": {
            "stft": {"filter_length": N_FFT, "hop_length": HOP, "causal": True},
            "mel": {"n_mel_channels": MEL_BINS},
        },
    }


def tiny_hifigan_config() -> dict:
    return {
        "resblock": "1",
        "stereo": True,
        "upsample_initial_channel": 16,
        "upsample_rates": [3, 2],
        "upsample_kernel_sizes": [7, 4],
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "output_sampling_rate": 24000,
    }


def tiny_bwe_config() -> dict:
    """BigVGAN v2 (AMP1, snakebeta) at 16 kHz, then bandwidth extension 3x to 48 kHz; the BWE
    generator upsamples one hop (8 samples) to 24 output samples."""
    amp = {
        "resblock": "AMP1",
        "stereo": True,
        "activation": "snakebeta",
        "upsample_initial_channel": 16,
    }
    return {
        "vocoder": {
            **amp,
            "upsample_rates": [2, 2],
            "upsample_kernel_sizes": [4, 4],
            "resblock_kernel_sizes": [3, 5],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
            "use_tanh_at_final": False,
        },
        "bwe": {
            **amp,
            "upsample_rates": [4, 6],
            "upsample_kernel_sizes": [8, 12],
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
            "use_bias_at_final": False,
            "input_sampling_rate": 16000,
            "output_sampling_rate": 48000,
            "n_fft": 32,
            "hop_length": 8,
            "num_mels": 64,
        },
    }


def _windowed_dft_basis(n_fft: int) -> torch.Tensor:
    """(2·n_freqs, 1, n_fft): real then imaginary DFT rows times a periodic Hann window, the
    kind of basis official files store for the BWE's causal STFT."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, dtype=torch.float64)
    angle = 2 * math.pi * k * n / n_fft
    return torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window]).float()[:, None]


def _sane_statistics_(module: torch.nn.Module) -> None:
    with torch.no_grad():
        std = module.per_channel_statistics.get_buffer("std-of-means")
        std.copy_(std.abs() + 0.5)


def _real_filters_(vocoder: torch.nn.Module) -> None:
    """Seeding overwrote the anti-aliasing filters with noise: put back the values ltx-core
    computes (and official files store), and recompute the BWE resampler's non-persistent one."""
    with torch.no_grad():
        for name, buffer in vocoder.named_buffers():
            if name.endswith(("upsample.filter", "lowpass.filter")):
                k = buffer.shape[-1]
                half_width = 0.6 / 2
                buffer.copy_(ref_kaiser_sinc_filter1d(0.5 / 2, half_width, k))
            elif name.endswith("mel_basis"):
                buffer.abs_()  # filterbanks are non-negative
            elif name.endswith("forward_basis"):
                buffer.copy_(_windowed_dft_basis(buffer.shape[-1]))
        # With seeded weights most output samples would sit far outside [-1, 1] and be clipped,
        # leaving little but rounding noise to compare; a trained vocoder's output mostly lies
        # inside. Shrink the output convolutions so that it does here too.
        for name, parameter in vocoder.named_parameters():
            if name.endswith("conv_post.weight"):
                parameter.mul_(0.1)
        if hasattr(vocoder, "resampler"):
            fresh = RefUpSample1d(ratio=vocoder.resampler.ratio, persistent=False, window_type="hann")
            vocoder.resampler.filter = fresh.filter


def _audio_vae_checkpoint(directory, section: dict, seed: int):
    config = {"audio_vae": section}
    encoder = seed_module_(AudioEncoderConfigurator.from_config(config), seed=seed)
    decoder = seed_module_(AudioDecoderConfigurator.from_config(config), seed=seed + 1)
    _sane_statistics_(encoder)
    # Official files hold one copy of the statistics, shared by both halves.
    decoder.per_channel_statistics.load_state_dict(encoder.per_channel_statistics.state_dict())
    tensors = {}
    for part, module in (("encoder", encoder), ("decoder", decoder)):
        own = {k: v for k, v in module.state_dict().items() if not k.startswith("per_channel_statistics.")}
        tensors.update(prefixed(f"audio_vae.{part}.", own))
    tensors.update(
        prefixed(
            "audio_vae.per_channel_statistics.",
            encoder.per_channel_statistics.state_dict(),
        )
    )
    path = save_checkpoint(directory / "audio_vae.safetensors", tensors, config)
    return path, encoder, decoder


@pytest.fixture(scope="module")
def audio_vae_checkpoint(tmp_path_factory):
    return _audio_vae_checkpoint(tmp_path_factory.mktemp("audio_vae"), tiny_audio_vae_config(), seed=1)


def variant_config(causality_axis: str | None) -> dict:
    """The other causality axes, without attention and with one block per level; the
    non-causal one with group norm (32 groups, so 8 latent channels x 4 bins = ch = 32)."""
    section = tiny_audio_vae_config()
    ddconfig = section["model"]["params"]["ddconfig"]
    ddconfig.update(
        causality_axis=causality_axis,
        attn_resolutions=[],
        mid_block_add_attention=False,
        num_res_blocks=1,
    )
    if causality_axis is None:
        ddconfig.update(norm_type="group", ch=32, z_channels=8)
    return section


@pytest.mark.parametrize("causality_axis", ["width", "width-compatibility", None])
def test_audio_vae_variants_match_reference(tmp_path, causality_axis):
    section = variant_config(causality_axis)
    path, encoder, decoder = _audio_vae_checkpoint(tmp_path, section, seed=20)
    z = section["model"]["params"]["ddconfig"]["z_channels"]
    spectrogram = _random((1, 2, 17, MEL_BINS), seed=21)
    latent = _random((1, z, 5, MEL_BINS // 4), seed=22)
    with torch.no_grad():
        expected_latent, expected_mel = encoder(spectrogram), decoder(latent)
    vae = load_audio_vae(path)
    assert_matches(
        f"audio encoder {causality_axis} fp32",
        vae.encode(to_mx(spectrogram)),
        expected_latent,
    )
    assert_matches(f"audio decoder {causality_axis} fp32", vae.decode(to_mx(latent)), expected_mel)


def _vocoder_checkpoint(tmp_path_factory, vocoder_config: dict, name: str, seed: int):
    config = {"vocoder": vocoder_config}
    vocoder = seed_module_(VocoderConfigurator.from_config(config), seed=seed)
    _real_filters_(vocoder)
    path = save_checkpoint(
        tmp_path_factory.mktemp(name) / f"{name}.safetensors",
        prefixed("vocoder.", vocoder.state_dict()),
        config,
    )
    return path, vocoder


@pytest.fixture(scope="module")
def hifigan_checkpoint(tmp_path_factory):
    return _vocoder_checkpoint(tmp_path_factory, tiny_hifigan_config(), "hifigan", seed=3)


@pytest.fixture(scope="module")
def bwe_checkpoint(tmp_path_factory):
    return _vocoder_checkpoint(tmp_path_factory, tiny_bwe_config(), "bwe", seed=4)


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_audio_decoder_matches_reference(audio_vae_checkpoint):
    path, _, decoder = audio_vae_checkpoint
    latent = _random((2, 4, 5, MEL_BINS // 4), seed=10)
    with torch.no_grad():
        expected = decoder(latent)
    assert expected.shape == (2, 2, 17, MEL_BINS)
    vae = load_audio_vae(path, encoder=False)
    assert vae.encoder is None
    assert_matches("audio decoder fp32", vae.decode(to_mx(latent)), expected)
    vae_bf16 = load_audio_vae(path, dtype=mx.bfloat16, encoder=False)
    assert_cosine("audio decoder bf16", vae_bf16.decode(to_mx(latent, mx.bfloat16)), expected)


def test_audio_encoder_matches_reference(audio_vae_checkpoint):
    path, encoder, _ = audio_vae_checkpoint
    spectrogram = _random((2, 2, 17, MEL_BINS), seed=11)
    with torch.no_grad():
        expected = encoder(spectrogram)
    assert expected.shape == (2, 4, 5, MEL_BINS // 4)
    vae = load_audio_vae(path, decoder=False)
    assert_matches("audio encoder fp32", vae.encode(to_mx(spectrogram)), expected)
    vae_bf16 = load_audio_vae(path, dtype=mx.bfloat16, decoder=False)
    assert_cosine("audio encoder bf16", vae_bf16.encode(to_mx(spectrogram, mx.bfloat16)), expected)


# (stride, kernel, padding) of every upsampling layer in the LTX-2 HiFi-GAN, the LTX-2.3 BigVGAN
# and its bandwidth extension, and a kernel shorter than twice its stride.
@pytest.mark.parametrize(
    "stride,kernel,padding", [(6, 16, 5), (5, 15, 5), (2, 8, 3), (2, 4, 1), (5, 11, 3), (6, 12, 3), (3, 4, 0)]
)
def test_phase_conv_transpose_equals_torch_conv_transpose(stride, kernel, padding):
    torch.manual_seed(stride * 100 + kernel)
    reference = torch.nn.ConvTranspose1d(12, 8, kernel, stride=stride, padding=padding)
    x = torch.randn(2, 12, 11)
    with torch.no_grad():
        expected = reference(x)
    layer = PhaseConvTranspose1d(12, 8, kernel, stride, padding)
    layer.weight = phase_weight(to_mx(reference.weight.permute(1, 2, 0)), stride)
    layer.bias = to_mx(reference.bias)
    actual = layer(to_mx(x.transpose(1, 2))).transpose(0, 2, 1)
    assert_matches(f"transposed conv as phases s{stride} k{kernel} p{padding}", actual, expected)


def test_hifigan_vocoder_matches_reference(hifigan_checkpoint):
    path, reference = hifigan_checkpoint
    mel = _random((2, 2, 9, 64), seed=12)
    with torch.no_grad():
        expected = reference(mel)
    assert expected.shape == (2, 2, 9 * 6)
    vocoder = load_vocoder(path)
    assert vocoder.output_sampling_rate == 24000
    assert_matches("HiFi-GAN vocoder fp32", vocoder(to_mx(mel)), expected)
    assert_cosine(
        "HiFi-GAN vocoder bf16",
        load_vocoder(path, mx.bfloat16)(to_mx(mel, mx.bfloat16)),
        expected,
    )


def test_vocoder_load_holds_its_weights_about_once(tmp_path):
    """The converted weights (transposed, contiguous, phase-stacked) are computed a group at a
    time with nothing else holding the file's tensors: evaluated all at once the load peaked at
    1.8x the weights."""
    config = {**tiny_hifigan_config(), "upsample_initial_channel": 1024}
    reference = VocoderConfigurator.from_config({"vocoder": config}).to(torch.bfloat16)
    path = save_checkpoint(
        tmp_path / "v.safetensors", prefixed("vocoder.", reference.state_dict()), {"vocoder": config}
    )
    mx.clear_cache()
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    vocoder = load_vocoder(path, mx.float16)  # cast as well: the file's bf16 tensors then fp16 copies
    weights = sum(p.nbytes for _, p in tree_flatten(vocoder.parameters()))
    assert weights > 2**24
    assert mx.get_peak_memory() - before <= 1.25 * weights


def test_bigvgan_bwe_vocoder_matches_reference(bwe_checkpoint):
    path, reference = bwe_checkpoint
    # 7 frames -> 28 samples at 16 kHz, not a multiple of the BWE hop (8): exercises the padding.
    mel = _random((1, 2, 7, 64), seed=13)
    with torch.no_grad():
        expected = reference(mel)
    assert expected.shape == (1, 2, 28 * 3)
    vocoder = load_vocoder(path)
    assert vocoder.output_sampling_rate == 48000
    assert_matches("BigVGAN+BWE vocoder fp32", vocoder(to_mx(mel)), expected)
    assert_cosine(
        "BigVGAN+BWE vocoder bf16",
        load_vocoder(path, mx.bfloat16)(to_mx(mel, mx.bfloat16)),
        expected,
    )


def test_bigvgan_bwe_vocoder_through_the_cuda_activation_kernel_matches_reference(bwe_checkpoint, host_kernels):
    """The bf16 CUDA path of every anti-aliased activation (run here by the host compiler)."""
    path, reference = bwe_checkpoint
    mel = _random((1, 2, 7, 64), seed=13)
    with torch.no_grad():
        expected = reference(mel)
    vocoder = load_vocoder(path, mx.bfloat16)
    waveform = vocoder(to_mx(mel, mx.bfloat16))
    activations = [m for _, m in vocoder.named_modules() if type(m).__name__ == "Activation1d"]
    assert len(host_kernels.launches) == len(activations) == 2 * 2 * 6 + 1 + 2 * 1 * 6 + 1  # levels, blocks, acts
    assert_cosine("BigVGAN+BWE vocoder bf16, CUDA activation kernel", waveform, expected)


def test_decode_audio_matches_reference(audio_vae_checkpoint, hifigan_checkpoint):
    """Latent -> mel -> waveform end to end; the tiny decoder's 16 mel bins are tiled to the
    vocoder's 64 by a config with mel_bins=64 (the decoder pads the extra bins with zeros)."""
    vae_path, _, decoder = audio_vae_checkpoint
    vocoder_path, vocoder = hifigan_checkpoint
    latent = _random((1, 4, 3, MEL_BINS // 4), seed=14)
    decoder.mel_bins = 64  # reference: pad to the vocoder's width like a 64-bin config would
    try:
        with torch.no_grad():
            expected = ref_decode_audio(latent, decoder, vocoder)
    finally:
        decoder.mel_bins = MEL_BINS
    vae = load_audio_vae(vae_path, encoder=False)
    vae.decoder.mel_bins = 64
    audio = decode_audio(to_mx(latent), vae.decoder, load_vocoder(vocoder_path))
    assert audio.sampling_rate == expected.sampling_rate == 24000
    assert_matches("decode_audio fp32", audio.waveform, expected.waveform)


def reference_fbanks(n_freqs: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks(n_freqs, 0, sr/2, n_mels, sr, norm="slaney",
    mel_scale="slaney"), transcribed in torch: (n_freqs, n_mels)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(freq: float) -> float:
        return min_log_mel + math.log(freq / min_log_hz) / logstep if freq >= min_log_hz else freq / f_sp

    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2)
    f_pts = f_sp * m_pts
    log_t = m_pts >= min_log_mel
    f_pts[log_t] = min_log_hz * torch.exp(logstep * (m_pts[log_t] - min_log_mel))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    fb = torch.clamp(torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]), min=0)
    return fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)


def reference_log_mel(waveform: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> torch.Tensor:
    """torchaudio's MelSpectrogram(power=1, center, reflect, periodic Hann, Slaney scale and
    norm, f_max = sr/2) then log(clamp(1e-5)), (B, C, frames, n_mels): a torch-only transcription
    of torchaudio.functional.spectrogram and MelScale."""
    fb = reference_fbanks(n_fft // 2 + 1, sample_rate, n_mels)
    shape = waveform.shape
    spec = torch.stft(
        waveform.reshape(-1, shape[-1]),
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    ).abs()
    spec = spec.reshape(*shape[:-1], *spec.shape[-2:])
    mel = torch.matmul(spec.transpose(-1, -2), fb)
    return torch.log(torch.clamp(mel, min=1e-5))


def reference_resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """torchaudio.functional.resample(waveform, orig, new) with its defaults (sinc_interp_hann,
    lowpass_filter_width=6, rolloff=0.99), transcribed in torch; kernel in the waveform's dtype."""
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    width_lp, rolloff = 6, 0.99
    base_freq = min(orig, new) * rolloff
    width = math.ceil(width_lp * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=waveform.dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=waveform.dtype)[:, None, None] / new + idx
    t = (t * base_freq).clamp(-width_lp, width_lp)
    window = torch.cos(t * math.pi / width_lp / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t) * window * (base_freq / orig)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    out = torch.nn.functional.conv1d(
        torch.nn.functional.pad(flat, (width, width + orig))[:, None],
        kernel,
        stride=orig,
    )
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[..., : math.ceil(new * length / orig)]
    return out.reshape(*shape[:-1], -1)


def test_log_mel_front_end_matches_torch_transcription():
    waveform = _random((2, 2, 1000), seed=15) * 0.3
    expected = reference_log_mel(waveform, SAMPLE_RATE, N_FFT, HOP, MEL_BINS)
    processor = AudioProcessor(
        target_sample_rate=SAMPLE_RATE,
        mel_bins=MEL_BINS,
        mel_hop_length=HOP,
        n_fft=N_FFT,
    )
    actual = processor.waveform_to_mel(Audio(to_mx(waveform), SAMPLE_RATE))
    assert actual.shape == (2, 2, 1 + 1000 // HOP, MEL_BINS)
    assert_matches("log-mel front end fp32", actual, expected)
    # The real LTX-2 filterbank: 16 kHz, 1024-point FFT, 64 mel bins.
    assert_matches(
        "mel filterbank 16k/1024/64",
        melscale_fbanks(513, 0.0, 8000.0, 64, 16000),
        reference_fbanks(513, 16000, 64),
    )


@pytest.mark.parametrize("orig_freq", [24000, 44100])
def test_resample_matches_torch_transcription(orig_freq):
    waveform = _random((1, 2, orig_freq // 20), seed=17) * 0.3
    expected = reference_resample(waveform, orig_freq, SAMPLE_RATE)
    actual = resample(to_mx(waveform), orig_freq, SAMPLE_RATE)
    assert actual.shape == expected.shape == (1, 2, SAMPLE_RATE // 20)
    assert_matches(f"resample {orig_freq}->16000 fp32", actual, expected)
    # The front end resamples first.
    processor = AudioProcessor(
        target_sample_rate=SAMPLE_RATE,
        mel_bins=MEL_BINS,
        mel_hop_length=HOP,
        n_fft=N_FFT,
    )
    mel = processor.waveform_to_mel(Audio(to_mx(waveform), orig_freq))
    assert_matches(
        f"log-mel of {orig_freq} Hz input fp32",
        mel,
        reference_log_mel(expected, SAMPLE_RATE, N_FFT, HOP, MEL_BINS),
    )


def test_encode_audio_matches_reference(audio_vae_checkpoint):
    """Waveform -> latent through ltx-core's encode_audio with the torch mel transcription as
    its processor, against encode_audio with the MLX front end."""
    path, encoder, _ = audio_vae_checkpoint
    waveform = _random((1, 2, 16 * HOP), seed=16) * 0.3

    class TorchMel:
        def waveform_to_mel(self, audio):
            return reference_log_mel(audio.waveform, SAMPLE_RATE, N_FFT, HOP, MEL_BINS).to(audio.waveform.dtype)

    with torch.no_grad():
        expected = ref_encode_audio(RefAudio(waveform=waveform, sampling_rate=SAMPLE_RATE), encoder, TorchMel())
    vae = load_audio_vae(path, decoder=False)
    actual = encode_audio(Audio(to_mx(waveform), SAMPLE_RATE), vae.encoder)
    assert_matches("encode_audio fp32", actual, expected)


def test_config_sections_parse_like_ltx_core():
    config = AudioVAEConfig.from_section(tiny_audio_vae_config())
    assert (
        config.ch,
        config.z_channels,
        config.mel_bins,
        config.mel_hop_length,
        config.n_fft,
    ) == (
        16,
        4,
        16,
        HOP,
        N_FFT,
    )
    defaults = AudioVAEConfig.from_section({})
    assert (
        defaults.ch,
        defaults.ch_mult,
        defaults.norm_type,
        defaults.causality_axis,
    ) == (
        128,
        (1, 2, 4),
        "pixel",
        "height",
    )
    assert VocoderConfig.from_section(tiny_bwe_config()).vocoder.output_sampling_rate == 16000
    bad = tiny_audio_vae_config()
    bad["model"]["params"]["ddconfig"]["norm_type"] = "group"
    with pytest.raises(ValueError, match="norm_type='group'"):
        AudioVAEConfig.from_section(bad)
    with pytest.raises(ValueError, match="resblock"):
        VocoderConfig.from_section({**tiny_hifigan_config(), "resblock": "2"})


def test_wrong_file_is_refused(tmp_path, hifigan_checkpoint):
    vocoder_path, _ = hifigan_checkpoint
    with pytest.raises(CheckpointError, match="no 'audio_vae' section"):
        load_audio_vae(vocoder_path)
    video_only = save_checkpoint(tmp_path / "video.safetensors", {"vae.decoder.x": torch.zeros(1)}, {"vae": {}})
    with pytest.raises(CheckpointError, match="no 'vocoder' section"):
        load_vocoder(video_only)


def test_missing_keys_are_named(tmp_path, audio_vae_checkpoint, hifigan_checkpoint):
    from safetensors.torch import load_file

    path, _, _ = audio_vae_checkpoint
    tensors = load_file(path)
    dropped = "audio_vae.decoder.conv_in.conv.weight"
    del tensors[dropped]
    del tensors["audio_vae.per_channel_statistics.std-of-means"]
    broken = save_checkpoint(tmp_path / "broken.safetensors", tensors, {"audio_vae": tiny_audio_vae_config()})
    with pytest.raises(CheckpointError, match=r"missing: .*decoder\.conv_in\.conv\.weight"):
        load_audio_vae(broken)
    with pytest.raises(CheckpointError, match="std_of_means"):
        load_audio_vae(broken, decoder=False)
    no_encoder = {k: v for k, v in load_file(path).items() if not k.startswith("audio_vae.encoder.")}
    decoder_only = save_checkpoint(
        tmp_path / "decoder.safetensors",
        no_encoder,
        {"audio_vae": tiny_audio_vae_config()},
    )
    with pytest.raises(CheckpointError, match="encoder=False"):
        load_audio_vae(decoder_only)
    assert load_audio_vae(decoder_only, encoder=False).decoder is not None
    vocoder_path, _ = hifigan_checkpoint
    vocoder_tensors = load_file(vocoder_path)
    del vocoder_tensors["vocoder.conv_post.bias"]
    broken_vocoder = save_checkpoint(
        tmp_path / "voc.safetensors",
        vocoder_tensors,
        {"vocoder": tiny_hifigan_config()},
    )
    with pytest.raises(CheckpointError, match=r"missing: conv_post\.bias"):
        load_vocoder(broken_vocoder)


def _structure_matches(reference: torch.nn.Module, module, sanitize) -> None:
    """Every reference tensor, converted by `sanitize`, lands on a parameter of the same shape
    and every parameter is covered; shapes only (meta tensors, lazy MLX arrays)."""
    from mlx.utils import tree_flatten

    shapes = {k: mx.zeros(tuple(v.shape)) for k, v in reference.state_dict().items()}
    converted = {k: tuple(v.shape) for k, v in sanitize(shapes).items()}
    expected = {k: tuple(v.shape) for k, v in tree_flatten(module.parameters())}
    assert converted == expected


def test_ltx2_sized_models_have_the_reference_structure():
    """At LTX-2 size (ltx-core's defaults, 64 mel bins; HiFi-GAN 1024 channels; BigVGAN + BWE)
    the reference keys and shapes map one to one onto the MLX modules."""
    from LTX_2_MLX.model.audio_vae import AudioDecoder, AudioEncoder, build_vocoder
    from LTX_2_MLX.model.audio_vae.audio_vae import sanitize as vae_sanitize
    from LTX_2_MLX.model.audio_vae.vocoder import sanitize as vocoder_sanitize

    section = {"model": {"params": {"ddconfig": {"mel_bins": 64}}}}
    bwe = tiny_bwe_config()
    bwe["vocoder"].update(
        upsample_initial_channel=1536,
        upsample_rates=[5, 2, 2, 2, 2, 2],
        upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
    )
    (
        bwe["vocoder"].pop("resblock_kernel_sizes"),
        bwe["vocoder"].pop("resblock_dilation_sizes"),
    )
    bwe["bwe"].update(
        upsample_initial_channel=512,
        upsample_rates=[6, 5, 2, 2, 2],
        upsample_kernel_sizes=[12, 11, 4, 4, 4],
    )
    bwe["bwe"].update(hop_length=80, n_fft=512)
    with torch.device("meta"):
        ref_encoder = AudioEncoderConfigurator.from_config({"audio_vae": section})
        ref_decoder = AudioDecoderConfigurator.from_config({"audio_vae": section})
        ref_hifigan = VocoderConfigurator.from_config({"vocoder": {"resblock": "1", "stereo": True}})
        ref_bwe = VocoderConfigurator.from_config({"vocoder": bwe})
    config = AudioVAEConfig.from_section(section)
    _structure_matches(ref_encoder, AudioEncoder(config), vae_sanitize)
    _structure_matches(ref_decoder, AudioDecoder(config), vae_sanitize)
    for vocoder_config, ref_vocoder in ((VocoderConfig.from_section({"resblock": "1", "stereo": True}), ref_hifigan),
                                        (VocoderConfig.from_section(bwe), ref_bwe)):  # fmt: skip
        _structure_matches(ref_vocoder, build_vocoder(vocoder_config), partial(vocoder_sanitize, config=vocoder_config))

"""Vocoder, mel -> stereo waveform for 5 s of audio: MLX vs ltx-core on the same GPU, same
random weights, same run, for both kinds of vocoder:

- LTX-2: HiFi-GAN at 24 kHz (ltx-core's VocoderConfigurator defaults: 1,024 channels,
  upsampling 6·5·2·2·2 = 240 samples per mel frame);
- LTX-2.3: BigVGAN v2 at 16 kHz (1,536 channels, 5·2·2·2·2·2 = 160, anti-aliased SnakeBeta
  activations), then bandwidth extension to 48 kHz (causal log-mel of the 16 kHz waveform, a
  512-channel BigVGAN generator 6·5·2·2·2 = 240 = hop 80 × 3, plus a sinc-upsampled skip).

Input: the mel that the audio VAE decoder gives for 5 s, (1, 2, 497, 64): 25 latent frames a
second, 125 of them, decoded causally to 4·125 − 3 mel frames of 10 ms (a random tensor of that
shape). Random bf16 weights at real size; the resampling filters are the ones ltx-core computes,
the BWE's STFT basis a windowed DFT and its mel filterbank random non-negative. Each side runs
`--warmup` times, then `--iters` timed runs: the median, peak memory, the ratio MLX / ltx-core
(goal, issue 12: <= 1.0) and the cosine between the two waveforms; for MLX also the size of one
forward's graph: its primitives, and those that launch work (all but views such as slices and
reshapes; a compiled kernel counts once), a kernel count that does not depend on the device.

    python benchmarks/vocoder.py                    # GPU, both kinds
    python benchmarks/vocoder.py --kind bigvgan     # one kind (hifigan | bigvgan)
    python benchmarks/vocoder.py --small            # narrow vocoders, 0.2 s, on the CPU
    python benchmarks/vocoder.py --json out.json    # also write the figures (a list, one per kind)
    python benchmarks/vocoder.py --profile          # GPU time per kernel kind, one more run per side and kind
"""

import argparse
import collections
import io
import math
import re
import sys
import types
from functools import partial

import mlx.core as mx
import numpy as np
import torch
from harness import cosine, median_mlx, median_torch, profile_mlx, profile_torch, report, use_cpu, write_json

try:
    import torchaudio  # noqa: F401  (ltx_core.model.audio_vae imports it; only its AudioProcessor uses it)
except ImportError:
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
from ltx_core.model.audio_vae.model_configurator import VocoderConfigurator

from LTX_2_MLX.loader.checkpoint import load_module_weights
from LTX_2_MLX.model.audio_vae import VocoderConfig, build_vocoder
from LTX_2_MLX.model.audio_vae.vocoder import sanitize

GOAL = 1.0
LATENT_FRAMES_PER_SECOND = 25  # the audio VAE's latent rate
LATENT_TO_MEL = 4  # the audio VAE decoder's time upsampling (causal: 4·T − 3 mel frames)
MEL_BINS = 64

# LTX-2: the flat `vocoder` section (ltx-core's defaults, written out).
HIFIGAN = {
    "resblock": "1", "stereo": True, "upsample_initial_channel": 1024,
    "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "output_sampling_rate": 24000,
}  # fmt: skip

# LTX-2.3: the nested `vocoder` section, {"vocoder": BigVGAN v2, "bwe": bandwidth extension}.
_AMP = {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_tanh_at_final": False,
        "use_bias_at_final": False, "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]}  # fmt: skip
BIGVGAN_BWE = {
    "vocoder": {**_AMP, "upsample_initial_channel": 1536, "upsample_rates": [5, 2, 2, 2, 2, 2],
                "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4]},
    "bwe": {**_AMP, "upsample_initial_channel": 512, "upsample_rates": [6, 5, 2, 2, 2],
            "upsample_kernel_sizes": [12, 11, 4, 4, 4], "apply_final_activation": False,
            "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
            "win_size": 512, "num_mels": 64},
}  # fmt: skip

KINDS = {"hifigan": ("LTX-2 HiFi-GAN, 24 kHz", HIFIGAN), "bigvgan": ("LTX-2.3 BigVGAN v2 + BWE, 48 kHz", BIGVGAN_BWE)}


def narrow(section: dict) -> dict:
    """The same rates and kernels with two channels at the last level (--small)."""
    if "bwe" in section:
        return {part: narrow(value) for part, value in section.items()}
    return {**section, "upsample_initial_channel": 2 ** (len(section["upsample_rates"]) + 1)}


def mel_frames(seconds: float) -> int:
    return LATENT_TO_MEL * max(1, round(seconds * LATENT_FRAMES_PER_SECOND)) - (LATENT_TO_MEL - 1)


def windowed_dft_basis(n_fft: int) -> torch.Tensor:
    """(2·(n_fft/2 + 1), 1, n_fft): cos rows then −sin rows, times a periodic Hann window."""
    samples = torch.arange(n_fft, dtype=torch.float64)
    frequencies = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * frequencies * samples / n_fft
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    return torch.cat([angle.cos() * window, -angle.sin() * window]).float()[:, None]


def build_reference(section: dict, seed: int = 0) -> torch.nn.Module:
    """ltx-core's vocoder (float32, on the CPU) with random weights: convolutions fan-in
    scaled, Snake log-α/log-β around 0, the output convolution shrunk so that little of the
    waveform is clipped. The computed anti-aliasing filters are kept."""
    vocoder = VocoderConfigurator.from_config({"vocoder": section})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(vocoder.named_parameters(), key=lambda item: item[0]):
            if parameter.ndim >= 2:
                fan_in = parameter[0].numel() if ".ups." not in f".{name}" else parameter.shape[0]
                scale = 1.0 / math.sqrt(fan_in)
            else:
                scale = 0.1
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * scale)
            if name.endswith("conv_post.weight"):
                parameter.mul_(0.1)
        for name, buffer in vocoder.named_buffers():
            if name.endswith("forward_basis"):
                buffer.copy_(windowed_dft_basis(buffer.shape[-1]))
            elif name.endswith("mel_basis"):
                buffer.copy_(torch.rand(buffer.shape, generator=gen) * 2 / buffer.shape[-1])
    return vocoder.eval()


def mlx_from_reference(reference: torch.nn.Module, section: dict, dtype: mx.Dtype):
    """Our vocoder with the reference's weights, as `load_vocoder` loads a checkpoint: the
    state dict ('vocoder.' stripped), `sanitize`, the strict loader in `dtype`."""
    config = VocoderConfig.from_section(section)
    vocoder = build_vocoder(config)
    weights = {key: mx.array(value.detach().float().numpy()) for key, value in reference.state_dict().items()}
    load_module_weights(vocoder, sanitize(weights, config), "<ltx-core state dict>", "vocoder", dtype)
    mx.eval(vocoder.parameters())
    return vocoder


# Primitives that make a view of their input rather than launch a kernel.
VIEWS = {"AsStrided", "Broadcast", "ExpandDims", "Flatten", "Reshape", "Slice", "Squeeze", "Transpose", "Unflatten"}


def graph_size(output: mx.array) -> dict:
    """Primitives in the lazy graph of `output` (not evaluated yet), all and those that launch work,
    and the five most frequent of the latter."""
    dot = io.StringIO()
    mx.export_to_dot(dot, output)
    names = collections.Counter(re.findall(r'label ="([^"]+)"', dot.getvalue()))
    work = collections.Counter({name: n for name, n in names.items() if name not in VIEWS})
    frequent = {name if len(name) <= 40 else name[:37] + "...": n for name, n in work.most_common(5)}
    return {"primitives": sum(names.values()), "kernels": sum(work.values()), "most_frequent": frequent}


def run_kind(kind: str, args, device: str, torch_dtype: torch.dtype, mx_dtype: mx.Dtype) -> dict:
    title, section = KINDS[kind]
    section = narrow(section) if args.small else section
    reference = build_reference(section)
    vocoder = mlx_from_reference(reference, section, mx_dtype)
    reference = reference.to(device=device, dtype=torch_dtype)
    if hasattr(reference, "resampler"):
        # A non-persistent buffer made on the CPU: follow the model to the device.
        reference.resampler.filter = reference.resampler.filter.to(device)

    frames = mel_frames(args.seconds)
    mel = torch.randn((1, 2, frames, MEL_BINS), generator=torch.Generator().manual_seed(1))
    mel_torch, mel_mlx = mel.to(device=device, dtype=torch_dtype), mx.array(mel.numpy()).astype(mx_dtype)

    ref_timing, ref_wave = median_torch(partial(reference, mel_torch), args.warmup, args.iters, device)
    ref_wave = ref_wave.float().cpu().numpy()
    profiles = []
    if args.profile:
        # Before the reference is freed, so that the MLX side still runs alone on the GPU.
        profiles.append(profile_torch(partial(reference, mel_torch), device, f"ltx-core {kind}", args.top))
    del reference, mel_torch
    if device == "cuda":
        torch.cuda.empty_cache()
    mlx_timing, mlx_wave = median_mlx(partial(vocoder, mel_mlx), args.warmup, args.iters)
    mlx_wave = np.array(mlx_wave.astype(mx.float32))
    if args.profile:
        profiles.append(profile_mlx(partial(vocoder, mel_mlx), f"MLX {kind}", args.top))
    graph = graph_size(vocoder(mel_mlx))
    if mlx_wave.shape != ref_wave.shape:
        raise SystemExit(f"{title}: waveform shapes differ, MLX {mlx_wave.shape}, ltx-core {ref_wave.shape}")
    rate = vocoder.output_sampling_rate
    size = f"{args.seconds:g} s: mel (1, 2, {frames}, {MEL_BINS}) -> waveform {tuple(ref_wave.shape)} at {rate} Hz"
    clipped = float(np.mean(np.abs(ref_wave) >= 0.999))
    extra = {"kind": kind, "dtype": str(mx_dtype), "clipped_fraction": clipped, "mlx_graph": graph}
    figures = report(
        f"vocoder, {title}", size, mlx_timing, ref_timing, cosine(mlx_wave, ref_wave), goal=GOAL, extra=extra
    )
    print(f"  MLX graph of one forward: {graph['primitives']} primitives, {graph['kernels']} kernels", flush=True)
    if profiles:
        figures["profiles"] = profiles
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["both", *KINDS], default="both")
    parser.add_argument("--seconds", type=float, default=None, help="audio length (default 5; 0.2 with --small)")
    parser.add_argument("--small", action="store_true", help="narrow (2 channels at the last level), 0.2 s, CPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--profile", action="store_true", help="kernel tables of one more run per side and kind")
    parser.add_argument("--top", type=int, default=25, help="kernels listed with --profile")
    args = parser.parse_args()
    args.seconds = args.seconds or (0.2 if args.small else 5.0)
    if args.small:
        device, torch_dtype, mx_dtype = "cpu", torch.float32, mx.float32
        use_cpu()
    else:
        device, torch_dtype, mx_dtype = "cuda", torch.bfloat16, mx.bfloat16
    print(f"mlx {mx.__version__} on {mx.default_device()}, torch {torch.__version__} on {device}, {mx_dtype}")
    kinds = list(KINDS) if args.kind == "both" else [args.kind]
    figures = [run_kind(kind, args, device, torch_dtype, mx_dtype) for kind in kinds]
    if args.json:
        write_json(args.json, figures)
    for figure in figures:
        for table in figure.get("profiles", []):
            print(table, flush=True)


if __name__ == "__main__":
    main()

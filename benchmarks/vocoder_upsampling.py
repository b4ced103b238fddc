"""The LTX-2 HiFi-GAN's upsampling layers as loaded (phase convolutions, `PhaseConvTranspose1d`)
against MLX's nn.ConvTranspose1d with the same weights: the whole vocoder's time and the peak
memory of a forward over its weights, 5 s of audio, bf16.

    python benchmarks/vocoder_upsampling.py          # GPU (or Metal)
    python benchmarks/vocoder_upsampling.py --small  # a narrow vocoder on the CPU: checks the script

An earlier one-off of this comparison (separately drawn weights) on one H200, MLX 0.32.4 CUDA:
7.9 ms with phase convolutions, 9.3 ms with nn.ConvTranspose1d, the same forward peak (0.6 GiB
over the weights).
"""

import argparse
import statistics
import time

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_map
from vocoder import HIFIGAN

from LTX_2_MLX.model.audio_vae import VocoderConfig, build_vocoder
from LTX_2_MLX.model.audio_vae.vocoder import PhaseConvTranspose1d, phase_weight


def vocoders(section: dict) -> tuple[nn.Module, nn.Module]:
    """(phase convolutions, nn.ConvTranspose1d) HiFi-GANs with the same random bf16 weights
    (MLX's fan-in scaled initialisations)."""
    phases = build_vocoder(VocoderConfig.from_section(section))
    phases.update(tree_map(lambda a: a.astype(mx.bfloat16), phases.parameters()))
    transposed = build_vocoder(VocoderConfig.from_section(section))
    transposed.update(phases.parameters())
    for index, up in enumerate(phases.ups):
        assert isinstance(up, PhaseConvTranspose1d)
        out_channels, in_channels = up.bias.shape[0], up.weight.shape[2]
        layer = nn.ConvTranspose1d(in_channels, out_channels, up.kernel_size, stride=up.stride, padding=up.padding)
        layer.weight, layer.bias = layer.weight.astype(mx.bfloat16), up.bias
        up.weight = phase_weight(layer.weight, up.stride)
        transposed.ups[index] = layer
    mx.eval(phases.parameters(), transposed.parameters())
    return phases, transposed


def measure(vocoder: nn.Module, mel: mx.array, iters: int) -> tuple[float, int]:
    """Median seconds of a forward after one warm-up, and that warm-up's peak over the weights."""
    mx.synchronize()
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(vocoder(mel))
    mx.synchronize()
    peak = mx.get_peak_memory() - before
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        mx.eval(vocoder(mel))
        mx.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a 64-channel vocoder, 0.2 s of audio, on the CPU")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    section, frames = dict(HIFIGAN), 497  # 5 s of audio: 497 mel frames at 100 per second
    if args.small:
        mx.set_default_device(mx.cpu)
        section, frames = {**section, "upsample_initial_channel": 64}, 20
    mel = mx.random.normal((1, 2, frames, 64), key=mx.random.key(0)).astype(mx.bfloat16)
    phases, transposed = vocoders(section)
    difference = mx.abs(phases(mel).astype(mx.float32) - transposed(mel).astype(mx.float32)).max().item()
    scale = mx.abs(transposed(mel).astype(mx.float32)).max().item()
    print(
        f"mlx {mx.__version__} on {mx.default_device()}; outputs differ by {difference:.3g} at most (scale {scale:.3g})"
    )
    for name, vocoder in (("phase convolutions", phases), ("nn.ConvTranspose1d", transposed)):
        seconds, peak = measure(vocoder, mel, args.iters)
        print(f"  {name:<20} {seconds * 1e3:8.2f} ms, forward peak {peak / 2**20:7.0f} MiB over the weights")


if __name__ == "__main__":
    main()

"""Parameter memory and one DiT forward of the real-size model in bf16, fp8, int8 and int4.

    python benchmarks/quantized_memory.py                   # 19B config, 768x512x121, all modes
    python benchmarks/quantized_memory.py --modes bf16 int4
    python benchmarks/quantized_memory.py --small           # a quick CPU check of the script

Random bf16 weights (as transformer_step.py), quantized in place with quantize_transformer;
the models are built one at a time and freed before the next. Prints, per mode, the
parameter bytes, the quantization time, seconds per forward and peak memory.
"""

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).parent))
from transformer_step import CONFIG, positions_numpy, random_mlx_model, small_config, token_layout

from LTX_2_MLX.model.transformer import LTXModel, Modality
from LTX_2_MLX.quantization import MODES, parameter_bytes, quantize_transformer, quantized_layers


def inputs(model: LTXModel, layout: dict, fps: float) -> tuple[Modality, Modality]:
    c = model.config
    video_pos, audio_pos = positions_numpy(layout, fps)
    video_tokens = layout["f"] * layout["h"] * layout["w"]

    def modality(channels: int, tokens: int, positions) -> Modality:
        return Modality(
            latent=mx.random.normal((1, tokens, channels)).astype(mx.bfloat16),
            sigma=mx.array([0.7]),
            timesteps=mx.full((1, tokens, 1), 0.7),
            positions=mx.array(positions),
            context=mx.random.normal((1, layout["context"], c.caption_channels)).astype(mx.bfloat16),
            context_mask=mx.ones((1, layout["context"]), dtype=mx.int32),
        )

    video = modality(c.in_channels, video_tokens, video_pos)
    audio = modality(c.audio_in_channels, layout["audio"], audio_pos)
    mx.eval(video, audio)
    return video, audio


def measure(mode: str, config: dict, layout: dict, fps: float, warmup: int, iters: int) -> dict:
    model = random_mlx_model(config)
    start = time.perf_counter()
    if mode != "bf16":
        quantize_transformer(model, mode)
        mx.eval(model.parameters())
    quantize_seconds = time.perf_counter() - start
    # The peak counts from here: the bf16 weights quantized away are freed first (a model
    # loaded quantized never holds them all at once).
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    video, audio = inputs(model, layout, fps)
    for _ in range(warmup):
        mx.eval(model(video, audio))
    start = time.perf_counter()
    for _ in range(iters):
        mx.eval(model(video, audio))
    result = dict(  # noqa: C408
        mode=mode,
        parameter_bytes=parameter_bytes(model),
        quantized_layers=len(quantized_layers(model)),
        quantize_s=quantize_seconds,
        forward_s=(time.perf_counter() - start) / iters,
        peak_bytes=mx.get_peak_memory(),
    )
    del model, video, audio
    gc.collect()
    mx.clear_cache()
    return result


def size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=["bf16", *MODES], default=["bf16", *MODES])
    parser.add_argument("--small", action="store_true", help="2-layer narrow model, 256x256x9: checks the script")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    config = json.loads(CONFIG.read_text())
    if args.small:
        # Width 64 per stream so the block Linears can be quantized in groups of 64.
        config = small_config(config)
        config["transformer"].update(cross_attention_dim=64, audio_attention_head_dim=32, audio_cross_attention_dim=64)
        args.width, args.height, args.frames = 256, 256, 9
    layout = token_layout(args.width, args.height, args.frames, args.fps, 1024 if not args.small else 32)
    tokens = layout["f"] * layout["h"] * layout["w"]
    print(f"device {mx.default_device()}; DiT forward {args.width}x{args.height}x{args.frames} "
          f"({tokens}+{layout['audio']} tokens)", flush=True)  # fmt: skip
    baseline = None
    for mode in args.modes:
        r = measure(mode, config, layout, args.fps, args.warmup, args.iters)
        baseline = baseline or r["parameter_bytes"]
        print(
            f"{mode:>5}: parameters {size(r['parameter_bytes'])} ({r['parameter_bytes'] / baseline:.2f}x of "
            f"{args.modes[0]}), {r['quantized_layers']} quantized layers, quantize {r['quantize_s']:.1f} s, "
            f"forward {r['forward_s']:.3f} s, peak memory {size(r['peak_bytes'])}",
            flush=True,
        )


if __name__ == "__main__":
    main()

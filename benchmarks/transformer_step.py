"""One DiT forward at real size with random weights: MLX against ltx-core on the same machine.

    python benchmarks/transformer_step.py --impl mlx     # or torch; run each in its own process
    python benchmarks/transformer_step.py --impl mlx --small   # a quick CPU check of the script

Random bf16 weights, the 19B config in configs/ltx2_19b.json, 768x512x121 at 24 fps by
default (6,144 video + 126 audio tokens, 1,024 context tokens). Prints seconds per forward
and peak memory.
"""

import argparse
import json
import time
from pathlib import Path

CONFIG = Path(__file__).parent / "configs" / "ltx2_19b.json"


def small_config(config: dict) -> dict:
    section = dict(config["transformer"], num_layers=2, num_attention_heads=2, attention_head_dim=32,
                   audio_num_attention_heads=2, audio_attention_head_dim=16, cross_attention_dim=64,
                   audio_cross_attention_dim=32, caption_channels=48)  # fmt: skip
    return {"transformer": section}


def token_layout(width: int, height: int, frames: int, fps: float, context_tokens: int) -> dict:
    latent_frames = (frames - 1) // 8 + 1
    audio_tokens = round(frames / fps * 25)  # 25 audio latents per second, as AudioLatentShape
    return dict(f=latent_frames, h=height // 32, w=width // 32, audio=audio_tokens, context=context_tokens)


def positions_numpy(layout: dict, fps: float):
    """Video (1, 3, T, 2) pixel/seconds bounds with the causal first frame; audio (1, 1, T, 2) seconds."""
    import numpy as np

    f, h, w = np.meshgrid(np.arange(layout["f"]), np.arange(layout["h"]), np.arange(layout["w"]), indexing="ij")
    starts = np.stack([f, h, w]).reshape(3, -1).astype(np.float32) * np.array([[8], [32], [32]], np.float32)
    bounds = np.stack([starts, starts + np.array([[8], [32], [32]], np.float32)], axis=-1)
    bounds[0] = np.maximum(bounds[0] + 1 - 8, 0) / fps
    audio = np.arange(layout["audio"], dtype=np.float32) * 0.04
    return bounds[None], np.stack([audio, audio + 0.04], axis=-1)[None, None]


def random_mlx_model(config: dict):
    """The DiT with random bf16 weights. The (still lazy) float32 initialisers are replaced
    one tensor at a time, so the float32 model is never materialised."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from LTX_2_MLX.model.transformer import LTXModel, LTXModelConfig, LTXModelType

    model = LTXModel(LTXModelConfig.from_checkpoint_config(config, LTXModelType.AudioVideo))
    params = []
    for name, p in tree_flatten(model.parameters()):
        value = (mx.random.normal(p.shape, dtype=mx.bfloat16) * 0.02).astype(mx.bfloat16)
        mx.eval(value)
        params.append((name, value))
    model.update(tree_unflatten(params))
    return model


def run_mlx(config: dict, layout: dict, fps: float, warmup: int, iters: int) -> tuple[float, float]:
    import mlx.core as mx

    from LTX_2_MLX.model.transformer import Modality

    model = random_mlx_model(config)
    c = model.config
    video_pos, audio_pos = positions_numpy(layout, fps)
    tokens = layout["f"] * layout["h"] * layout["w"]

    def modality(channels, n, positions, context_dim):
        return Modality(
            latent=mx.random.normal((1, n, channels)).astype(mx.bfloat16),
            sigma=mx.array([0.7]),
            timesteps=mx.full((1, n, 1), 0.7),
            positions=mx.array(positions),
            context=mx.random.normal((1, layout["context"], context_dim)).astype(mx.bfloat16),
            context_mask=mx.ones((1, layout["context"]), dtype=mx.int32),
        )

    video = modality(c.in_channels, tokens, video_pos, c.caption_channels)
    audio = modality(c.audio_in_channels, layout["audio"], audio_pos, c.caption_channels)
    mx.eval(video, audio)
    mx.reset_peak_memory()
    for _ in range(warmup):
        mx.eval(model(video, audio))
    start = time.perf_counter()
    for _ in range(iters):
        mx.eval(model(video, audio))
    seconds = (time.perf_counter() - start) / iters
    return seconds, mx.get_peak_memory() / 1e9


def run_torch(config: dict, layout: dict, fps: float, warmup: int, iters: int) -> tuple[float, float]:
    import torch
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(config)
    model = model.to(torch.bfloat16).to_empty(device=device).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    section = config["transformer"]
    video_pos, audio_pos = positions_numpy(layout, fps)
    tokens = layout["f"] * layout["h"] * layout["w"]

    def modality(channels, n, positions):
        return Modality(
            latent=torch.randn(1, n, channels, device=device, dtype=torch.bfloat16),
            sigma=torch.tensor([0.7], device=device),
            timesteps=torch.full((1, n, 1), 0.7, device=device),
            positions=torch.from_numpy(positions).to(device),
            context=torch.randn(1, layout["context"], section["caption_channels"], device=device, dtype=torch.bfloat16),
            context_mask=torch.ones(1, layout["context"], dtype=torch.int64, device=device),
        )

    video = modality(section["in_channels"], tokens, video_pos)
    audio = modality(section["audio_in_channels"], layout["audio"], audio_pos)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(warmup):
            model(video, audio, None)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            model(video, audio, None)
        sync()
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["mlx", "torch"], required=True)
    parser.add_argument("--small", action="store_true", help="2-layer narrow model, 256x256x9: checks the script")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    config = json.loads(CONFIG.read_text())
    if args.small:
        config = small_config(config)
        args.width, args.height, args.frames = 256, 256, 9
    layout = token_layout(args.width, args.height, args.frames, args.fps, 1024 if not args.small else 32)
    runner = run_mlx if args.impl == "mlx" else run_torch
    seconds, peak = runner(config, layout, args.fps, args.warmup, args.iters)
    tokens = layout["f"] * layout["h"] * layout["w"]
    print(
        f"{args.impl}: DiT forward {args.width}x{args.height}x{args.frames} ({tokens}+{layout['audio']} tokens): "
        f"{seconds:.3f} s, peak memory {peak:.1f} GB",
        flush=True,
    )


if __name__ == "__main__":
    main()

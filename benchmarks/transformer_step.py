"""One DiT forward at real size with random weights: MLX against ltx-core, same run, same GPU.

    python benchmarks/transformer_step.py                          # 19B layout, 768x512x121
    python benchmarks/transformer_step.py --size 1216x704x121 --layout 2.3
    python benchmarks/transformer_step.py --impl mlx               # one side only
    python benchmarks/transformer_step.py --profile                # GPU time per kernel kind
    python benchmarks/transformer_step.py --small                  # a quick CPU check of the script

Random bf16 weights, the 19B config in configs/ltx2_19b.json (--layout 2.3 switches on LTX-2.3's
gated attention, cross-attention AdaLN and caption projection outside the DiT, on the same
widths), 24 fps, 1,024 context tokens; per-token timesteps as in the denoising loop, every
token at sigma 0.7 (text-to-video; MLX then embeds the shared timestep once per forward), or
with `--clean-first-frame` the first latent frame's tokens at 0 (image-to-video). Both
sides are built and held at once (~80 GB at 768x512x121; `--one-at-a-time` for smaller GPUs);
each runs `--warmup` forwards, then `--iters` timed rounds alternate one forward of each; the
median is reported with peak memory, the ratio MLX / reference and the achieved TFLOP/s (the
FLOPs of the matrix products and attention, counted from the config).

--profile records one more forward of each side with torch.profiler: CUPTI sees every kernel
in the process, MLX's included, so the table compares the two on the same clock.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from harness import profile_kernels

CONFIG = Path(__file__).parent / "configs" / "ltx2_19b.json"


def small_config(config: dict) -> dict:
    section = dict(config["transformer"], num_layers=2, num_attention_heads=2, attention_head_dim=32,
                   audio_num_attention_heads=2, audio_attention_head_dim=16, cross_attention_dim=64,
                   audio_cross_attention_dim=32, caption_channels=48)  # fmt: skip
    return {"transformer": section}


def ltx23_layout(config: dict) -> dict:
    """LTX-2.3's switches on the given widths: the caption projection runs in the text connector."""
    section = dict(config["transformer"], apply_gated_attention=True, cross_attention_adaln=True,
                   caption_proj_before_connector=True, caption_projection_first_linear=False,
                   caption_proj_input_norm=False, caption_projection_second_linear=False)  # fmt: skip
    return {"transformer": section}


def token_layout(width: int, height: int, frames: int, fps: float, context_tokens: int) -> dict:
    latent_frames = (frames - 1) // 8 + 1
    audio_tokens = round(frames / fps * 25)  # 25 audio latents per second, as AudioLatentShape
    return dict(f=latent_frames, h=height // 32, w=width // 32, audio=audio_tokens, context=context_tokens)


def positions_numpy(layout: dict, fps: float):
    """Video (1, 3, T, 2) pixel/seconds bounds with the causal first frame; audio (1, 1, T, 2) seconds."""
    f, h, w = np.meshgrid(np.arange(layout["f"]), np.arange(layout["h"]), np.arange(layout["w"]), indexing="ij")
    starts = np.stack([f, h, w]).reshape(3, -1).astype(np.float32) * np.array([[8], [32], [32]], np.float32)
    bounds = np.stack([starts, starts + np.array([[8], [32], [32]], np.float32)], axis=-1)
    bounds[0] = np.maximum(bounds[0] + 1 - 8, 0) / fps
    audio = np.arange(layout["audio"], dtype=np.float32) * 0.04
    return bounds[None], np.stack([audio, audio + 0.04], axis=-1)[None, None]


def context_dims(section: dict) -> tuple[int, int]:
    """Feature width of the video and audio contexts the DiT is given."""
    if section.get("caption_proj_before_connector", False):
        return section["cross_attention_dim"], section["audio_cross_attention_dim"]
    return section["caption_channels"], section["caption_channels"]


def forward_tflop(section: dict, layout: dict) -> float:
    """Matrix-product and attention FLOPs of one forward (2 per multiply-add), in TFLOP."""
    video = layout["f"] * layout["h"] * layout["w"]
    audio, context = layout["audio"], layout["context"]
    dim = section["num_attention_heads"] * section["attention_head_dim"]
    audio_dim = section["audio_num_attention_heads"] * section["audio_attention_head_dim"]
    video_context, audio_context = context_dims(section)

    def linear(tokens: int, d_in: int, d_out: int) -> float:
        return 2.0 * tokens * d_in * d_out

    def attention(q_tokens: int, kv_tokens: int, width: int) -> float:
        return 4.0 * q_tokens * kv_tokens * width

    def stream_block(tokens: int, d: int) -> float:
        self_attn = 4 * linear(tokens, d, d) + attention(tokens, tokens, d)
        text = 2 * linear(tokens, d, d) + 2 * linear(context, d, d) + attention(tokens, context, d)
        return self_attn + text + linear(tokens, d, 4 * d) + linear(tokens, 4 * d, d)

    a2v = linear(video, dim, audio_dim) + 2 * linear(audio, audio_dim, audio_dim) + linear(video, audio_dim, dim)
    v2a = linear(audio, audio_dim, audio_dim) + 2 * linear(video, dim, audio_dim) + linear(audio, audio_dim, audio_dim)
    cross = a2v + v2a + attention(video, audio, audio_dim) + attention(audio, video, audio_dim)
    block = stream_block(video, dim) + stream_block(audio, audio_dim) + cross
    coefficient = 9 if section.get("cross_attention_adaln") else 6
    outside = linear(video, dim, coefficient * dim) + linear(audio, audio_dim, coefficient * audio_dim)
    if not section.get("caption_proj_before_connector", False):
        outside += linear(context, video_context, dim) + linear(context, dim, dim)
        outside += linear(context, audio_context, audio_dim) + linear(context, audio_dim, audio_dim)
    return (section["num_layers"] * block + outside) / 1e12


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


def numpy_inputs(section: dict, layout: dict, fps: float, seed: int = 0, clean_first_frame: bool = False) -> dict:
    """The same latents, positions, contexts and per-token timesteps (sigma 0.7) for both sides;
    with clean_first_frame the first latent frame's tokens are at 0 (an image-conditioned step)."""
    rng = np.random.default_rng(seed)
    video_pos, audio_pos = positions_numpy(layout, fps)
    video_context, audio_context = context_dims(section)
    video_tokens = layout["f"] * layout["h"] * layout["w"]
    video_timesteps = np.full((1, video_tokens, 1), 0.7, np.float32)
    if clean_first_frame:
        video_timesteps[:, : layout["h"] * layout["w"]] = 0.0
    return {
        "video": (rng.standard_normal((1, video_tokens, section["in_channels"]), np.float32), video_pos,
                  rng.standard_normal((1, layout["context"], video_context), np.float32), video_timesteps),
        "audio": (rng.standard_normal((1, layout["audio"], section["audio_in_channels"]), np.float32), audio_pos,
                  rng.standard_normal((1, layout["context"], audio_context), np.float32),
                  np.full((1, layout["audio"], 1), 0.7, np.float32)),
    }  # fmt: skip


def mlx_modalities(inputs: dict):
    """The (video, audio) Modality pair of `numpy_inputs` for MLX, bf16, sigma 0.7, evaluated."""
    import mlx.core as mx

    from LTX_2_MLX.model.transformer import Modality

    def modality(latent, positions, context, timesteps):
        contexts = context.shape[1]
        return Modality(
            latent=mx.array(latent).astype(mx.bfloat16),
            sigma=mx.array([0.7]),
            timesteps=mx.array(timesteps),
            positions=mx.array(positions),
            context=mx.array(context).astype(mx.bfloat16),
            context_mask=mx.ones((1, contexts), dtype=mx.int32),
        )

    video, audio = modality(*inputs["video"]), modality(*inputs["audio"])
    mx.eval(video, audio)
    return video, audio


class MLXSide:
    name = "MLX"

    def __init__(self, config: dict, inputs: dict):
        import mlx.core as mx

        self.mx = mx
        self.model = random_mlx_model(config)
        self.video, self.audio = mlx_modalities(inputs)

    def forward(self) -> None:
        self.mx.eval(self.model(self.video, self.audio))

    def synchronize(self) -> None:
        self.mx.synchronize()

    def reset_peak(self) -> None:
        self.mx.reset_peak_memory()

    def peak_gb(self) -> float:
        return self.mx.get_peak_memory() / 1e9

    def release(self) -> None:
        del self.model, self.video, self.audio
        self.mx.clear_cache()


class TorchSide:
    name = "ltx-core"

    def __init__(self, config: dict, inputs: dict):
        import torch
        from ltx_core.model.transformer.modality import Modality
        from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device("meta"):
            model = LTXModelConfigurator.from_config(config)
        self.model = model.to(torch.bfloat16).to_empty(device=self.device).eval()
        with torch.no_grad():
            for p in self.model.parameters():
                p.normal_(0, 0.02)

        def modality(latent, positions, context, timesteps):
            contexts = context.shape[1]
            return Modality(
                latent=torch.from_numpy(latent).to(self.device, torch.bfloat16),
                sigma=torch.tensor([0.7], device=self.device),
                timesteps=torch.from_numpy(timesteps).to(self.device),
                positions=torch.from_numpy(positions).to(self.device),
                context=torch.from_numpy(context).to(self.device, torch.bfloat16),
                context_mask=torch.ones(1, contexts, dtype=torch.int64, device=self.device),
            )

        self.video, self.audio = modality(*inputs["video"]), modality(*inputs["audio"])

    def forward(self) -> None:
        with self.torch.no_grad():
            self.model(self.video, self.audio, None)
        self.synchronize()

    def synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 1e9 if self.device == "cuda" else float("nan")

    def release(self) -> None:
        del self.model, self.video, self.audio
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def time_sides(sides: list, warmup: int, iters: int) -> list[tuple[float, list[float], float]]:
    """Per side: median seconds per forward after warm-up, all timings, peak memory (GB). With
    two sides the timed forwards alternate (one of each per round), so that neither runs on a
    GPU the other has left hotter or cooler."""
    for side in sides:
        for _ in range(warmup):
            side.forward()
        side.synchronize()
        side.reset_peak()
    times = [[] for _ in sides]
    for _ in range(iters):
        for side, taken in zip(sides, times):
            start = time.perf_counter()
            side.forward()
            taken.append(time.perf_counter() - start)
    return [(statistics.median(taken), taken, side.peak_gb()) for side, taken in zip(sides, times)]


def profile_side(side, top: int) -> str:
    """GPU time of one forward by kernel kind and the top kernels (harness.profile_kernels)."""

    def run() -> None:
        side.forward()
        side.synchronize()

    side.synchronize()
    return profile_kernels(run, side.name, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["both", "mlx", "torch"], default="both")
    parser.add_argument("--layout", choices=["2.0", "2.3"], default="2.0")
    parser.add_argument("--small", action="store_true", help="2-layer narrow model, 256x256x9: checks the script")
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="build, time and free one side, then the other (GPUs without room for both)")  # fmt: skip
    parser.add_argument("--clean-first-frame", action="store_true",
                        help="the first latent frame's tokens at timestep 0 (image-to-video); by default every "
                        "token is at sigma 0.7, so MLX embeds the shared timestep once")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="kernel table of one more forward per side")
    parser.add_argument("--top", type=int, default=25, help="kernels listed with --profile")
    args = parser.parse_args()
    width, height, frames = (int(v) for v in args.size.lower().split("x"))
    config = json.loads(CONFIG.read_text())
    if args.small:
        config = small_config(config)
        width, height, frames = 256, 256, 9
    if args.layout == "2.3":
        config = ltx23_layout(config)
    layout = token_layout(width, height, frames, args.fps, 1024 if not args.small else 32)
    section = config["transformer"]
    tflop = forward_tflop(section, layout)
    tokens = layout["f"] * layout["h"] * layout["w"]
    title = (f"DiT forward, LTX-{args.layout} layout, {width}x{height}x{frames} "
             f"({tokens}+{layout['audio']} tokens, {layout['context']} context), {tflop:.1f} TFLOP")  # fmt: skip
    print(title, flush=True)
    inputs = numpy_inputs(section, layout, args.fps, clean_first_frame=args.clean_first_frame)
    sides = {"torch": TorchSide, "mlx": MLXSide}
    chosen = ["torch", "mlx"] if args.impl == "both" else [args.impl]
    # Both held and alternating by default; one after the other where both do not fit (an 80 GB GPU).
    rounds = [chosen] if not args.one_at_a_time else [[key] for key in chosen]
    results, profiles = {}, []
    for keys in rounds:
        built = [sides[key](config, inputs) for key in keys]
        for key, side, (median, times, peak) in zip(keys, built, time_sides(built, args.warmup, args.iters)):
            results[key] = median
            spread = f"{min(times):.3f}-{max(times):.3f}"
            print(f"  {side.name:<9} {median:.3f} s median of {len(times)} ({spread}), "
                  f"{tflop / median:.0f} TFLOP/s, peak {peak:.1f} GB", flush=True)  # fmt: skip
            if args.profile:
                profiles.append(profile_side(side, args.top))
        for side in built:
            side.release()
    if len(results) == 2:
        print(f"  ratio MLX / ltx-core: {results['mlx'] / results['torch']:.3f}", flush=True)
    for table in profiles:
        print(table, flush=True)


if __name__ == "__main__":
    main()

"""Video VAE encode: MLX vs ltx-core on the same GPU, same random weights, same run.

Encodes a 768×512×121 video (1, 3, 121, 512, 768) to its latent (1, 128, 16, 16, 24) with the
real-size encoder (random bf16 weights; benchmarks/vae_decode.py's REAL_VAE, the layout of
REFERENCE_CONFIGS.md), untiled, as the image- and video-conditioned pipelines encode their
conditions. Prints the median of `--iters` runs after `--warmup` of each side, their ratio, peak
memory and the cosine between the two latents. Goal (issue 12): MLX / ltx-core <= 0.90.

    python benchmarks/vae_encode.py                  # GPU (MLX CUDA backend + torch CUDA)
    python benchmarks/vae_encode.py --small          # a tiny encoder on the CPU: checks the script
    python benchmarks/vae_encode.py --json out.json  # also write the figures
    python benchmarks/vae_encode.py --profile        # GPU time per kernel kind, one more run of each side
    python benchmarks/vae_encode.py --mlx-only --profile   # MLX alone (with both sides, --profile
                                                     # crashed with a segmentation fault on an H200)
"""

import argparse
import math
from functools import partial

import mlx.core as mx
import numpy as np
import torch
from harness import cosine, median_mlx, median_torch, profile_mlx, profile_torch, report, use_cpu
from ltx_core.model.video_vae import VideoEncoderConfigurator
from vae_decode import REAL_VAE

from LTX_2_MLX.loader.checkpoint import load_module_weights
from LTX_2_MLX.model.video_vae import VideoEncoder, VideoVAEConfig
from LTX_2_MLX.model.video_vae.video_vae import sanitize

GOAL = 0.90


def small_encoder_config() -> dict:
    """REAL_VAE's downsampling steps (32× space, 8× time) with one layer per res block and
    16 latent channels."""
    blocks = [["res_x", {"num_layers": 1}] if name == "res_x" else [name, params]
              for name, params in REAL_VAE["encoder_blocks"]]  # fmt: skip
    return {**REAL_VAE, "latent_channels": 16, "encoder_blocks": blocks}


def build_reference(config: dict, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """ltx-core's encoder from the config, every tensor drawn at random (fan-in scaled), with
    sane latent statistics (std-of-means > 0)."""
    with torch.device("meta"):
        encoder = VideoEncoderConfigurator.from_config({"vae": config})
    encoder = encoder.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        tensors = sorted([*encoder.named_parameters(), *encoder.named_buffers()], key=lambda item: item[0])
        for _, tensor in tensors:
            scale = 1.0 / math.sqrt(tensor[0].numel()) if tensor.ndim >= 2 else 0.1
            tensor.copy_(torch.randn(tensor.shape, generator=gen, device=device) * scale)
        encoder.per_channel_statistics.get_buffer("std-of-means").abs_().add_(0.5)
    return encoder.to(dtype).eval()


def mlx_from_reference(reference: torch.nn.Module, config: dict, dtype: mx.Dtype) -> VideoEncoder:
    """Our encoder with the reference's weights, through the checkpoint path: the state dict's
    keys as the file holds them (prefix stripped), `sanitize`, then the strict loader."""
    encoder = VideoEncoder(VideoVAEConfig.from_dict(config))
    weights = {}
    for key, value in reference.state_dict().items():
        key = key.replace("std-of-means", "std_of_means").replace("mean-of-means", "mean_of_means")
        weights[key] = mx.array(value.detach().float().cpu().numpy())
    load_module_weights(encoder, sanitize(weights), "<ltx-core state dict>", "video VAE encoder", dtype)
    mx.eval(encoder.parameters())
    return encoder


def mlx_only(encoder: VideoEncoder, shape: tuple[int, ...], dtype: mx.Dtype, args) -> None:
    """MLX's time for `shape` and, with --profile, its kernel table; the reference is not run."""
    video = (mx.random.uniform(shape=shape, key=mx.random.key(1)) * 2 - 1).astype(dtype)
    timing, _ = median_mlx(partial(encoder, video), args.warmup, args.iters)
    print(f"MLX encode: {timing.median_s:.4f} s median of {args.iters}", flush=True)
    if args.profile:
        print(profile_mlx(partial(encoder, video), "MLX", args.top), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny encoder, 64x64x9, on the CPU (script check)")
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--profile", action="store_true", help="kernel table of one more run per side")
    parser.add_argument("--top", type=int, default=25, help="kernels listed with --profile")
    parser.add_argument("--mlx-only", action="store_true", help="time (and profile) MLX alone; no ratio")
    args = parser.parse_args()

    width, height, frames = (int(v) for v in args.size.lower().split("x"))
    if args.small:
        config, device = small_encoder_config(), "cpu"
        width, height, frames = 64, 64, 9
        use_cpu()
        torch_dtype, mx_dtype = torch.float32, mx.float32
    else:
        config, device = REAL_VAE, "cuda"
        torch_dtype, mx_dtype = torch.bfloat16, mx.bfloat16
    size = f"{width}x{height}x{frames}"
    print(f"mlx {mx.__version__} on {mx.default_device()}, torch {torch.__version__} on {device}, {mx_dtype}")

    reference = build_reference(config, device, torch_dtype)
    encoder = mlx_from_reference(reference, config, mx_dtype)
    if args.mlx_only:
        del reference
        mlx_only(encoder, (1, 3, frames, height, width), mx_dtype, args)
        return
    gen = torch.Generator().manual_seed(1)
    video = torch.rand((1, 3, frames, height, width), generator=gen) * 2 - 1
    video_torch = video.to(device=device, dtype=torch_dtype)
    video_mlx = mx.array(video.numpy()).astype(mx_dtype)
    del video

    ref_timing, ref_latent = median_torch(partial(reference, video_torch), args.warmup, args.iters, device)
    ref_latent = ref_latent.float().cpu().numpy()
    print(f"ltx-core: latent {tuple(ref_latent.shape)}, {ref_timing.median_s:.4f} s", flush=True)
    # Profiled before the reference is freed, so that the MLX side still runs alone on the GPU.
    profiles = [profile_torch(partial(reference, video_torch), device, "ltx-core", args.top)] if args.profile else []
    del reference, video_torch
    if device == "cuda":
        torch.cuda.empty_cache()

    mlx_timing, mlx_latent = median_mlx(partial(encoder, video_mlx), args.warmup, args.iters)
    mlx_latent = np.array(mlx_latent.astype(mx.float32))
    if args.profile:
        profiles.append(profile_mlx(partial(encoder, video_mlx), "MLX", args.top))
    if mlx_latent.shape != ref_latent.shape:
        raise SystemExit(f"latent shapes differ: MLX {mlx_latent.shape}, ltx-core {ref_latent.shape}")
    extra = {"latent_shape": list(ref_latent.shape), "dtype": str(mx_dtype)}
    if profiles:
        extra["profiles"] = profiles
    report("video VAE encode, untiled", size, mlx_timing, ref_timing, cosine(mlx_latent, ref_latent), args.json,
           goal=GOAL, extra=extra)  # fmt: skip
    for table in profiles:
        print(table, flush=True)


if __name__ == "__main__":
    main()

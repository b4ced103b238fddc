"""Video VAE decode: MLX vs ltx-core on the same GPU, same random weights, same run.

Decodes the latent of a 768×512×121 video (1, 128, 16, 16, 24) with the real-size decoder
(random bf16 weights; the layout of /work/shared/REFERENCE_CONFIGS.md), untiled and tiled
(TilingConfig.default()), and prints both times, their ratio, peak memory and the cosine
between the two outputs. `--small` runs a tiny configuration on the CPU to check the script.

    python benchmarks/vae_decode.py            # GPU (MLX CUDA backend + torch CUDA)
    python benchmarks/vae_decode.py --small    # CPU smoke test
    python benchmarks/vae_decode.py --profile  # GPU time per kernel kind, untiled and tiled, each side

Measured on one H100 (MLX 0.32.4 CUDA, torch 2.11, ltx-core 1.0.0, bf16), min of 3 warm runs
(the script reports the median of --repeats since, through benchmarks/harness.py):
    ltx-core untiled 0.270 s, 7.61 GB    MLX untiled 0.207 s (0.77×), 18.46 GB; 8.63 GB with
                                         mx.set_memory_limit(8 GB), same time
                                         (per-frame 2D path, used on Metal: 0.248 s)
    ltx-core tiled   0.66 s,  3.26 GB    MLX tiled   0.592 s (0.90×), 15.59 GB; 0.554 s and 4.56 GB
                                         with mx.set_memory_limit(4 GB)
MLX keeps the inputs of work queued on the GPU alive until it completes, up to its memory
limit (80% of the GPU by default), hence the larger peak without a limit.
"""

import argparse
import math
import time

import mlx.core as mx
import numpy as np
import torch
from harness import cosine, median_mlx, median_torch, profile_mlx, profile_torch
from ltx_core.model.video_vae import SpatialTilingConfig as RefSpatialTilingConfig
from ltx_core.model.video_vae import TemporalTilingConfig as RefTemporalTilingConfig
from ltx_core.model.video_vae import TilingConfig as RefTilingConfig
from ltx_core.model.video_vae import VideoDecoderConfigurator

import LTX_2_MLX.model.video_vae.convolution as convolution
from LTX_2_MLX.model.video_vae import TilingConfig, VideoDecoder, VideoVAEConfig
from LTX_2_MLX.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig
from LTX_2_MLX.model.video_vae.video_vae import sanitize
from LTX_2_MLX.pipelines.memory_plan import temporal_overlap

REAL_VAE = {
    "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
    "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
    "timestep_conditioning": True, "decoder_base_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}]],
    "decoder_blocks": [["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 5, "inject_noise": False}]],
}  # fmt: skip


def small_vae() -> dict:
    res = ["res_x", {"num_layers": 1}]
    up = ["compress_all", {"residual": True, "multiplier": 2}]
    return {
        **REAL_VAE,
        "latent_channels": 16,
        "decoder_base_channels": 8,
        "decoder_blocks": [res, up, res, up, res, up, res],
    }


def build_reference(config: dict, device: str, dtype: torch.dtype, seed: int = 0):
    decoder = VideoDecoderConfigurator.from_config({"vae": config})
    decoder.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        tensors = list(decoder.named_parameters()) + list(decoder.named_buffers())
        for _, tensor in sorted(tensors, key=lambda item: item[0]):
            fan_in = tensor[0].numel() if tensor.ndim >= 2 else 1
            scale = 1.0 / math.sqrt(fan_in) if tensor.ndim >= 2 else 0.1
            tensor.copy_(torch.randn(tensor.shape, generator=gen, device=device) * scale)
        decoder.per_channel_statistics.get_buffer("std-of-means").abs_().add_(0.5)
        decoder.timestep_scale_multiplier.fill_(1000.0)
    decoder.decode_noise_scale = 0.0
    return decoder.to(dtype).eval()


def mlx_from_reference(reference: torch.nn.Module, config: dict, dtype: mx.Dtype) -> VideoDecoder:
    decoder = VideoDecoder(VideoVAEConfig.from_dict(config))
    weights = {}
    for key, value in reference.state_dict().items():
        array = mx.array(value.detach().float().cpu().numpy()).astype(dtype)
        key = key.replace("std-of-means", "std_of_means").replace("mean-of-means", "mean_of_means")
        weights[key] = array
    decoder.load_weights(list(sanitize(weights).items()))
    mx.eval(decoder.parameters())
    decoder.decode_noise_scale = 0.0
    return decoder


def run_tiled_only(decoder, latent, tiling, limits: list[float], repeats: int) -> None:
    """MLX's tiled decode alone under each memory limit: seconds (median) and peak."""

    def tiled():
        for chunk in decoder.tiled_decode(latent, tiling):
            mx.eval(chunk)
        return chunk

    for limit in limits:
        previous = mx.set_memory_limit(int(limit * 1e9)) if limit else None
        timing, _ = median_mlx(tiled, 1, repeats)
        if previous is not None:
            mx.set_memory_limit(previous)
        mx.clear_cache()
        print(f"MLX tiled, limit {f'{limit:g} GB' if limit else 'none'}: {timing.median_s:.3f} s, "
              f"peak {timing.peak_gb:.2f} GB", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny config on the CPU (script check)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up; the median is reported")
    parser.add_argument("--profile", action="store_true", help="kernel tables of one more run per side and mode")
    parser.add_argument("--top", type=int, default=25, help="kernels listed with --profile")
    parser.add_argument("--tile-size", default=None,
                        help="PIXELSxFRAMES of the tiled runs, chunks overlapping as the pipeline's "
                             "(default: the reference's)")  # fmt: skip
    parser.add_argument("--memory-limits", type=float, nargs="+", default=[0.0, 4.0],
                        help="GB; one MLX tiled run under each (0: no limit)")  # fmt: skip
    parser.add_argument("--mlx-only", action="store_true", help="only MLX's tiled runs (no reference, no untiled)")
    args = parser.parse_args()

    if args.small:
        config, shape, device = small_vae(), (1, 16, 3, 2, 3), "cpu"
        mx.set_default_device(mx.cpu)
        torch_dtype, mx_dtype = torch.float32, mx.float32
        tiling = (TilingConfig.default(), RefTilingConfig.default())
    else:
        config, shape, device = REAL_VAE, (1, 128, 16, 16, 24), "cuda"
        torch_dtype, mx_dtype = torch.bfloat16, mx.bfloat16
        tiling = (TilingConfig.default(), RefTilingConfig.default())
    if args.tile_size:
        pixels, frames = (int(v) for v in args.tile_size.split("x"))
        overlap = temporal_overlap(frames)  # as the pipeline's planned decode
        spatial, temporal = (pixels, 64), (frames, overlap)
        tiling = (TilingConfig(SpatialTilingConfig(*spatial), TemporalTilingConfig(*temporal)),
                  RefTilingConfig(RefSpatialTilingConfig(*spatial), RefTemporalTilingConfig(*temporal)))  # fmt: skip
    print(f"mlx {mx.__version__} on {mx.default_device()}, torch {torch.__version__} on {device}", flush=True)
    if device == "cuda":
        print(torch.cuda.get_device_name(), flush=True)

    reference = build_reference(config, device, torch_dtype)
    decoder = mlx_from_reference(reference, config, mx_dtype)
    gen = torch.Generator().manual_seed(1)
    latent_torch = torch.randn(shape, generator=gen).to(device=device, dtype=torch_dtype)
    latent_mlx = mx.array(latent_torch.float().cpu().numpy()).astype(mx_dtype)
    frames = (shape[2] - 1) * 8 + 1
    print(f"latent {shape} -> video {frames} frames {shape[3] * 32}x{shape[4] * 32}, {mx_dtype}", flush=True)

    if args.mlx_only:
        run_tiled_only(decoder, latent_mlx, tiling[0], args.memory_limits, args.repeats)
        return
    with torch.inference_mode():
        timing, ref_out = median_torch(lambda: reference(latent_torch), 1, args.repeats, device)
        ref_time, ref_peak = timing.median_s, timing.peak_gb
        ref_video = ref_out.float().cpu().numpy()
        del ref_out
        timing, _ = median_torch(
            lambda: [None for _chunk in reference.tiled_decode(latent_torch, tiling[1])], 1, args.repeats, device
        )
        ref_tiled_time, ref_tiled_peak = timing.median_s, timing.peak_gb
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"ltx-core untiled: {ref_time:.3f} s, peak {ref_peak:.2f} GB", flush=True)
    print(f"ltx-core tiled:   {ref_tiled_time:.3f} s, peak {ref_tiled_peak:.2f} GB", flush=True)

    package_choice = convolution._native_conv3d_is_faster

    def run_mlx(label: str, fn, reference_time: float, memory_limit_gb: float | None = None, native=None):
        """Time `fn` (warm), report it against the reference and return its output."""
        convolution._native_conv3d_is_faster = package_choice if native is None else (lambda: native)
        previous_limit = mx.set_memory_limit(int(memory_limit_gb * 1e9)) if memory_limit_gb else None
        try:
            first = time.perf_counter()
            mx.eval(fn())
            first = time.perf_counter() - first
            timing, out = median_mlx(fn, 1, args.repeats)
            mlx_time, mlx_peak = timing.median_s, timing.peak_gb
            print(
                f"MLX {label}: {mlx_time:.3f} s (first call {first:.2f} s), peak {mlx_peak:.2f} GB, "
                f"ratio MLX/ltx-core {mlx_time / reference_time:.2f}",
                flush=True,
            )
            return out
        finally:
            if previous_limit is not None:
                mx.set_memory_limit(previous_limit)
            convolution._native_conv3d_is_faster = package_choice
            mx.clear_cache()

    def untiled():
        return decoder(latent_mlx)

    def tiled():
        # Chunks are consumed and dropped, as a video writer would: peak memory is the streaming one.
        for chunk in decoder.tiled_decode(latent_mlx, tiling[0]):
            mx.eval(chunk)
        return chunk

    out = run_mlx("untiled", untiled, ref_time)
    print(f"  cosine vs ltx-core output: {cosine(np.array(out.astype(mx.float32)), ref_video):.5f}", flush=True)
    del out
    # MLX lets work queued on the GPU keep its inputs alive until it completes, up to the
    # memory limit (80% of the GPU by default); a lower limit makes it wait for queued work.
    run_mlx("untiled, mx.set_memory_limit(8 GB)", untiled, ref_time, memory_limit_gb=8)
    run_mlx("untiled, per-frame 2D formulation (the Metal/CPU path)", untiled, ref_time, native=False)
    for limit in args.memory_limits:
        label = f"tiled, mx.set_memory_limit({limit:g} GB)" if limit else "tiled"
        run_mlx(label, tiled, ref_tiled_time, memory_limit_gb=limit or None)

    # Where tiled time goes: the tiles decoded on their own, without blending.
    from LTX_2_MLX.model.video_vae.tiling import prepare_tiles_for_decoding

    tiles = prepare_tiles_for_decoding(latent_mlx.shape, tiling[0], decoder.scale_factors)
    total = 0.0
    for tile in tiles:
        part = latent_mlx[tile.in_coords]
        mx.eval(decoder(part))
        start = time.perf_counter()
        mx.eval(decoder(part))
        total += time.perf_counter() - start
    print(f"MLX tiles decoded alone: {len(tiles)} tiles, {total:.3f} s in all", flush=True)

    if args.profile:
        # Labels with a comma, so that phases.py's parser never reads a table line as a timing.
        profiles = [
            profile_torch(lambda: reference(latent_torch), device, "ltx-core, untiled", args.top),
            profile_mlx(untiled, "MLX, untiled", args.top),
            profile_torch(
                lambda: [None for _chunk in reference.tiled_decode(latent_torch, tiling[1])],
                device,
                "ltx-core, tiled",
                args.top,
            ),
            profile_mlx(tiled, "MLX, tiled", args.top),
        ]
        for table in profiles:
            print(table, flush=True)


if __name__ == "__main__":
    main()

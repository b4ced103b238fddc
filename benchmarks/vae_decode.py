"""Video VAE decode: MLX vs ltx-core on the same GPU, same random weights, same run.

Decodes the latent of a 768×512×121 video (1, 128, 16, 16, 24) with the real-size decoder
(random bf16 weights; the layout of /work/shared/REFERENCE_CONFIGS.md), untiled and tiled
(TilingConfig.default()), and prints both times, their ratio, peak memory and the cosine
between the two outputs. `--small` runs a tiny configuration on the CPU to check the script.

    python benchmarks/vae_decode.py            # GPU (MLX CUDA backend + torch CUDA)
    python benchmarks/vae_decode.py --small    # CPU smoke test
"""

import argparse
import math
import time

import mlx.core as mx
import numpy as np
import torch
from ltx_core.model.video_vae import TilingConfig as RefTilingConfig
from ltx_core.model.video_vae import VideoDecoderConfigurator

import LTX_2_MLX.model.video_vae.convolution as convolution
from LTX_2_MLX.model.video_vae import TilingConfig, VideoDecoder, VideoVAEConfig
from LTX_2_MLX.model.video_vae.video_vae import sanitize

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
    return {**REAL_VAE, "latent_channels": 16, "decoder_base_channels": 8, "decoder_blocks": [res, up, res, up, res, up, res]}


# Other ways to evaluate the causal 3D convolution, for comparison with the package's
# per-frame 2D formulation (same signature as convolution.causal_conv3d).
def conv3d_native(x, weight, bias, stride, padding_mode, causal):
    kt, kh, kw = weight.shape[1:4]
    x = convolution.pad_temporal(x, kt, causal)
    b, f = x.shape[:2]
    if padding_mode == "zeros":
        padding = (0, kh // 2, kw // 2)
    else:
        x = convolution.pad_spatial(x.reshape(b * f, *x.shape[2:]), (kh // 2, kw // 2), padding_mode)
        x = x.reshape(b, f, *x.shape[1:])
        padding = (0, 0, 0)
    out = mx.conv3d(x, weight, stride=stride, padding=padding)
    return out + bias if bias is not None else out


def conv_taps_in_channels(x, weight, bias, stride, padding_mode, causal):
    """The temporal taps stacked on the channel axis: one 2D convolution with kT·C inputs."""
    kt, kh, kw = weight.shape[1:4]
    st, sh, sw = stride
    x = convolution.pad_temporal(x, kt, causal)
    b, f, h, w, c = x.shape
    frames_out = (f - kt) // st + 1
    x = x.reshape(b * f, h, w, c)
    if padding_mode == "zeros":
        padding = (kh // 2, kw // 2)
    else:
        x = convolution.pad_spatial(x, (kh // 2, kw // 2), padding_mode)
        padding = (0, 0)
    x = x.reshape(b, f, *x.shape[1:])
    taps = [x[:, i : i + st * (frames_out - 1) + 1 : st] for i in range(kt)]
    x = mx.concatenate(taps, axis=-1).reshape(b * frames_out, *x.shape[2:4], kt * c)
    w2d = weight.transpose(0, 2, 3, 1, 4).reshape(weight.shape[0], kh, kw, kt * c)
    out = mx.conv2d(x, w2d, stride=(sh, sw), padding=padding)
    if bias is not None:
        out = out + bias
    return out.reshape(b, frames_out, *out.shape[1:])


VARIANTS = {
    "frames2d (package)": convolution.causal_conv3d,
    "conv3d native": conv3d_native,
    "taps-in-channels 2d": conv_taps_in_channels,
}


def build_reference(config: dict, device: str, dtype: torch.dtype, seed: int = 0):
    decoder = VideoDecoderConfigurator.from_config({"vae": config})
    decoder.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(list(decoder.named_parameters()) + list(decoder.named_buffers())):
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


def time_torch(fn, repeats: int, device: str) -> tuple[float, float, torch.Tensor]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = fn()
    sync()
    del out
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return min(times), peak, out


def time_mlx(fn, repeats: int) -> tuple[float, float, mx.array]:
    out = fn()
    mx.eval(out)
    del out
    mx.clear_cache()
    mx.reset_peak_memory()
    mx.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        mx.eval(out)
        times.append(time.perf_counter() - start)
    return min(times), mx.get_peak_memory() / 1e9, out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny config on the CPU (script check)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-variants", action="store_true", help="skip the other convolution formulations")
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

    with torch.inference_mode():
        ref_time, ref_peak, ref_out = time_torch(lambda: reference(latent_torch), args.repeats, device)
        ref_video = ref_out.float().cpu().numpy()
        del ref_out
        ref_tiled_time, ref_tiled_peak, _ = time_torch(
            lambda: [None for _chunk in reference.tiled_decode(latent_torch, tiling[1])], args.repeats, device
        )
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"ltx-core untiled: {ref_time:.3f} s, peak {ref_peak:.2f} GB", flush=True)
    print(f"ltx-core tiled:   {ref_tiled_time:.3f} s, peak {ref_tiled_peak:.2f} GB", flush=True)

    variants = {"frames2d (package)": convolution.causal_conv3d} if args.no_variants else VARIANTS
    package = convolution.causal_conv3d
    results = {}
    for name, variant in variants.items():
        convolution.causal_conv3d = variant
        try:
            mlx_time, mlx_peak, out = time_mlx(lambda: decoder(latent_mlx), args.repeats)
            similarity = cosine(np.array(out.astype(mx.float32)), ref_video)
            del out
            results[name] = mlx_time
            print(
                f"MLX untiled [{name}]: {mlx_time:.3f} s, peak {mlx_peak:.2f} GB, "
                f"ratio MLX/ltx-core {mlx_time / ref_time:.2f}, cosine vs ltx-core {similarity:.5f}",
                flush=True,
            )
        except Exception as err:  # a formulation the backend cannot run is reported, not fatal
            print(f"MLX untiled [{name}]: failed: {type(err).__name__}: {err}", flush=True)
        finally:
            convolution.causal_conv3d = package
            mx.clear_cache()

    compiled = mx.compile(lambda latent: decoder(latent))
    mlx_time, mlx_peak, out = time_mlx(lambda: compiled(latent_mlx), args.repeats)
    del out
    print(
        f"MLX untiled [package, mx.compile]: {mlx_time:.3f} s, peak {mlx_peak:.2f} GB, "
        f"ratio {mlx_time / ref_time:.2f}",
        flush=True,
    )
    mx.clear_cache()

    def tiled():
        # Chunks are consumed and dropped, as a video writer would: peak memory is the streaming one.
        for chunk in decoder.tiled_decode(latent_mlx, tiling[0]):
            mx.eval(chunk)
        return chunk

    tiled_time, tiled_peak, _ = time_mlx(tiled, args.repeats)
    print(
        f"MLX tiled [package]: {tiled_time:.3f} s, peak {tiled_peak:.2f} GB, "
        f"ratio {tiled_time / ref_tiled_time:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()

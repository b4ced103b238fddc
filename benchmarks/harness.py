"""What every phase benchmark shares: the median of timed runs after warm-up on each side, and
one report (printed, and written as JSON with `--json`) of MLX against the reference.

    timing, output = median_torch(lambda: reference(x), warmup=2, iters=5, device="cuda")
    mlx_timing, mlx_output = median_mlx(lambda: model(x), warmup=2, iters=5)
    report("video VAE encode", "768x512x121", mlx_timing, timing, cosine(...), json_path)

`--profile` in the phase scripts: one more run of each side under torch.profiler (CUPTI sees
every CUDA kernel of the process, MLX's included, so one profiler times both sides):

    print(profile_mlx(lambda: model(x), "MLX"))
    print(profile_torch(lambda: reference(x), "cuda", "ltx-core"))
"""

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Timing:
    median_s: float
    times_s: list[float]
    peak_gb: float  # peak memory of the device after warm-up (weights included); NaN where unknown

    def spread(self) -> str:
        return f"{min(self.times_s):.3f}-{max(self.times_s):.3f}"


def median_torch(fn: Callable, warmup: int, iters: int, device: str):
    """Median seconds of `fn()` (a torch computation, run under inference_mode) and its last output."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn()
        sync()
        del out
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    return Timing(statistics.median(times), times, peak), out


def median_mlx(fn: Callable, warmup: int, iters: int):
    """Median seconds of `fn()` (an MLX computation, evaluated each time) and its last output."""
    import mlx.core as mx

    for _ in range(warmup):
        out = fn()
        mx.eval(out)
    del out
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        out = fn()
        mx.eval(out)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), times, mx.get_peak_memory() / 1e9), out


# Kernel kinds, matched in this order on the lower-cased kernel name. Attention comes first:
# cuDNN's SDPA kernels are named like its convolutions ("cudnn", "fprop", "sm90_"); convolution
# comes before matmul: cuDNN's implicit-GEMM convolutions are named like GEMMs ("xmma", "gemm").
KERNEL_KINDS = (
    ("attention", ("fmha", "flash", "attention", "sdpa")),
    ("convolution", ("conv", "implicit_gemm", "winograd", "fprop", "dgrad", "cudnn::")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas")),
    ("norm", ("norm",)),
    ("copy", ("copy", "concat", "gather", "scatter", "slice", "memcpy", "memset")),
)


def kernel_kind(name: str) -> str:
    # "convert" (dtype casts) is not a convolution.
    lowered = name.lower().replace("convert", "")
    for kind, keys in KERNEL_KINDS:
        if any(key in lowered for key in keys):
            return kind
    return "element-wise/other"


def profile_kernels(run: Callable[[], None], label: str, top: int = 25) -> str:
    """GPU time of one `run()` by kernel kind and its `top` kernels, from torch.profiler (CUPTI).
    `run` must synchronise its device before it returns; the device should be idle when called."""
    import torch

    if not torch.cuda.is_available():
        return f"{label}: no CUDA device, no kernel profile"
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
    wall = time.perf_counter() - start
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time_total / 1e6
            entry[1] += 1
    kinds: dict[str, list[float]] = {}
    for name, (seconds, count) in kernels.items():
        entry = kinds.setdefault(kernel_kind(name), [0.0, 0])
        entry[0] += seconds
        entry[1] += count
    busy = sum(seconds for seconds, _ in kernels.values())
    launches = sum(count for _, count in kernels.values())
    lines = [f"{label}: wall {wall:.3f} s under the profiler, GPU busy {busy:.3f} s, {launches} kernel launches"]
    for kind, (seconds, count) in sorted(kinds.items(), key=lambda item: -item[1][0]):
        lines.append(f"  {kind:<20} {seconds:8.4f} s  {count:6d} launches")
    lines.append(f"  top {top} kernels:")
    for name, (seconds, count) in sorted(kernels.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(f"    {seconds:8.4f} s {count:5d}x  {name[:110]}")
    return "\n".join(lines)


def profile_mlx(fn: Callable, label: str, top: int = 25) -> str:
    """profile_kernels of `fn()` (an MLX computation), evaluated and synchronised."""
    import mlx.core as mx

    def run() -> None:
        mx.eval(fn())
        mx.synchronize()

    mx.synchronize()
    return profile_kernels(run, label, top)


def profile_torch(fn: Callable, device: str, label: str, top: int = 25) -> str:
    """profile_kernels of `fn()` (a torch computation) under inference_mode, synchronised."""
    import torch

    def run() -> None:
        with torch.inference_mode():
            fn()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.synchronize()
    return profile_kernels(run, label, top)


def use_cpu() -> None:
    """`--small` runs: MLX on the CPU, torch on one thread (the CPU is shared; more threads only
    make the timings noisier)."""
    import mlx.core as mx
    import torch

    mx.set_default_device(mx.cpu)
    torch.set_num_threads(1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def versions() -> dict:
    import mlx.core as mx
    import torch

    found = {"mlx": mx.__version__, "mlx_device": str(mx.default_device()), "torch": torch.__version__,
             "python": platform.python_version()}  # fmt: skip
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
    for package in ("ltx_core", "transformers"):
        try:
            from importlib.metadata import version

            found[package] = version(package.replace("_", "-"))
        except Exception:
            pass
    return found


def report(
    phase: str,
    size: str,
    mlx: Timing,
    reference: Timing,
    output_cosine: float,
    json_path: str | None = None,
    reference_name: str = "ltx-core",
    goal: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Print both sides, the ratio MLX / reference and the cosine; write them to `json_path`."""
    ratio = mlx.median_s / reference.median_s
    print(f"{phase}, {size}", flush=True)
    for name, timing in ((reference_name, reference), ("MLX", mlx)):
        print(f"  {name:<13} {timing.median_s:.4f} s median of {len(timing.times_s)} ({timing.spread()}), "
              f"peak {timing.peak_gb:.2f} GB", flush=True)  # fmt: skip
    verdict = "" if goal is None else f" (goal <= {goal:.2f}: {'met' if ratio <= goal else 'NOT met'})"
    print(f"  ratio MLX / {reference_name}: {ratio:.3f}{verdict}", flush=True)
    print(f"  cosine of the outputs: {output_cosine:.6f}", flush=True)
    figures = {
        "phase": phase,
        "size": size,
        "reference": reference_name,
        "mlx": asdict(mlx),
        "ref": asdict(reference),
        "ratio": ratio,
        "goal": goal,
        "cosine": output_cosine,
        "versions": versions(),
        **(extra or {}),
    }
    if json_path:
        write_json(json_path, figures)
    return figures


def write_json(json_path: str, figures: dict | list[dict]) -> None:
    """One phase's figures, or a list of them (one script, several variants)."""
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN (an unknown CPU peak) is written as null, to keep the file strict JSON.
    path.write_text(json.dumps(_finite(figures), indent=2) + "\n")


def _finite(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

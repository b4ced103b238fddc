"""What every phase benchmark shares: the median of timed runs after warm-up on each side, and
one report (printed, and written as JSON with `--json`) of MLX against the reference.

    timing, output = median_torch(lambda: reference(x), warmup=2, iters=5, device="cuda")
    mlx_timing, mlx_output = median_mlx(lambda: model(x), warmup=2, iters=5)
    report("video VAE encode", "768x512x121", mlx_timing, timing, cosine(...), json_path)
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

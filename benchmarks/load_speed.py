"""How fast weights get from a safetensors file (in the page cache) into accelerator memory:
MLX as the loaders read them, MLX's other ways, and PyTorch's, on the same tensors.

    python benchmarks/load_speed.py CHECKPOINT --prefix model.diffusion_model.transformer_blocks. --limit-gb 6
    python benchmarks/load_speed.py CHECKPOINT --processor      # also the prompt processor: load, then run

Ways (each reads the same tensors, the file read once beforehand so that all find it cached):
  mlx one at a time     Checkpoint.load, each tensor evaluated alone
  mlx grouped           Checkpoint.load, 256 MiB of tensors per evaluation, the next group queued
                        before waiting for the last (evaluate_parameters).
                        On CUDA the loaders read on the CPU stream (MLX's io threads read several
                        tensors at once into managed memory) and copy each tensor to device
                        memory on the GPU; on Metal they read on the CPU stream, as everything does
  mlx resident          Checkpoint.load_resident (the resident loaders): on CUDA read with preadv on
                        threads into two reused host buffers, each copied to device memory by
                        the GPU while the other fills (loader.staging; --staging-mib each);
                        elsewhere as "mlx grouped"
  mlx gpu-stream        mx.load on the GPU stream, 256 MiB per evaluation: on CUDA, MLX reads each
                        tensor in the evaluating thread and copies it from pageable memory (what
                        the loaders did before)
  mlx cpu-stream        mx.load on the CPU stream, then one GPU pass over every tensor; on CUDA
                        the arrays stay in managed memory (a streamed DiT, whose buffers then pass
                        between CPU reads and GPU kernels every block, stalled for minutes)
  torch safe_open       safetensors' safe_open(device="cuda"), tensor by tensor
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from LTX_2_MLX.loader import staging  # noqa: E402
from LTX_2_MLX.loader.checkpoint import Checkpoint, evaluate_in_groups  # noqa: E402

GROUP_BYTES = 2**28  # evaluate_parameters' default


def chosen_names(checkpoint: Checkpoint, prefix: str, limit: int) -> list[str]:
    names, total = [], 0
    for name, entry in checkpoint.entries.items():
        if name.startswith(prefix) and total < limit:
            names.append(name)
            total += entry.nbytes
    return names


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass


def groups(arrays: list[mx.array], size: int) -> list[list[mx.array]]:
    out, current, held = [], [], 0
    for array in arrays:
        current.append(array)
        held += array.nbytes
        if held >= size:
            out.append(current)
            current, held = [], 0
    return out + ([current] if current else [])


def mlx_one_at_a_time(checkpoint: Checkpoint, names: list[str]) -> float:
    tensors = checkpoint.load("", decode_fp8=False)
    started = time.perf_counter()
    for name in names:
        mx.eval(tensors[name])
    mx.synchronize()
    return time.perf_counter() - started


def mlx_grouped(checkpoint: Checkpoint, names: list[str]) -> float:
    tensors = checkpoint.load("", decode_fp8=False)
    started = time.perf_counter()
    evaluate_in_groups([tensors[name] for name in names], GROUP_BYTES)
    mx.synchronize()
    return time.perf_counter() - started


def mlx_resident(checkpoint: Checkpoint, names: list[str]) -> float:
    chosen = set(names)
    started = time.perf_counter()
    tensors = checkpoint.load_resident("", decode_fp8=False, keep=chosen.__contains__)
    evaluate_in_groups(list(tensors.values()), GROUP_BYTES)  # nothing left to read on CUDA
    mx.synchronize()
    return time.perf_counter() - started


def mlx_gpu_stream(checkpoint: Checkpoint, names: list[str]) -> float:
    started = time.perf_counter()
    tensors = mx.load(str(checkpoint.path), format="safetensors", stream=mx.gpu)
    for group in groups([tensors[name] for name in names], GROUP_BYTES):
        mx.eval(group)
    mx.synchronize()
    return time.perf_counter() - started


def mlx_cpu_stream(checkpoint: Checkpoint, names: list[str]) -> float:
    started = time.perf_counter()
    tensors = mx.load(str(checkpoint.path), format="safetensors", stream=mx.cpu)
    chosen = [tensors[name] for name in names]
    for group in groups(chosen, GROUP_BYTES):
        mx.eval(group)
    mx.synchronize()
    read = time.perf_counter() - started
    # One pass of the accelerator over every tensor: where host-read memory must first move.
    mx.eval([array.max() for array in chosen])
    mx.synchronize()
    total = time.perf_counter() - started
    print(f"    (cpu-stream: read {read:.2f} s, then the first GPU pass {total - read:.2f} s)")
    return total


def torch_safe_open(checkpoint: Checkpoint, names: list[str]) -> float:
    import torch
    from safetensors import safe_open

    started = time.perf_counter()
    held = []
    with safe_open(str(checkpoint.path), framework="pt", device="cuda") as f:
        for name in names:
            held.append(f.get_tensor(name))
    torch.cuda.synchronize()
    return time.perf_counter() - started


def time_processor(checkpoint: Checkpoint) -> dict:
    """The prompt processor's load, then two runs on one prompt's worth of random hidden states."""
    from LTX_2_MLX.loader.text_encoder import load_embeddings_processor

    started = time.perf_counter()
    processor = load_embeddings_processor(checkpoint, dtype=mx.bfloat16)
    mx.synchronize()
    load = time.perf_counter() - started
    width = 3840  # Gemma 3 12B's hidden size; the features are every state's, side by side
    states = [mx.random.normal((1, 1024, width)).astype(mx.bfloat16) for _ in range(processor.config.flat_dim // width)]
    mask = (mx.arange(1024) >= 900)[None].astype(mx.int32)
    mx.eval(states, mask)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        mx.eval(processor(states, mask))
        runs.append(time.perf_counter() - started)
    print(f"prompt processor: load {load:.2f} s, runs {', '.join(f'{r:.3f}' for r in runs)} s")
    return {"load_s": load, "runs_s": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--prefix", default="model.diffusion_model.transformer_blocks.")
    parser.add_argument("--limit-gb", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-mib", type=int, default=256, help="MiB of tensors per evaluation, grouped ways")
    parser.add_argument("--staging-mib", type=int, default=staging._BUFFER_BYTES >> 20,
                        help="MiB of each staging buffer, mlx resident on CUDA")  # fmt: skip
    parser.add_argument("--ways", nargs="+", default=None, help="only these ways (labels as printed)")
    parser.add_argument("--processor", action="store_true", help="also time the prompt processor's load and run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    global GROUP_BYTES
    GROUP_BYTES = args.group_mib << 20
    staging._BUFFER_BYTES = args.staging_mib << 20

    checkpoint = Checkpoint.open(args.checkpoint)
    names = chosen_names(checkpoint, args.prefix, int(args.limit_gb * 1e9))
    nbytes = sum(checkpoint.entries[name].nbytes for name in names)
    warm_page_cache(checkpoint.path)
    print(f"{len(names)} tensors, {nbytes / 1e9:.2f} GB, from {checkpoint.path.name} ({mx.default_device()})")
    ways = {"mlx one at a time": mlx_one_at_a_time, "mlx grouped": mlx_grouped, "mlx resident": mlx_resident}
    if mx.cuda.is_available():
        ways.update({"mlx gpu-stream": mlx_gpu_stream, "mlx cpu-stream": mlx_cpu_stream})
    try:
        import torch

        if torch.cuda.is_available():
            ways["torch safe_open"] = torch_safe_open
    except ImportError:
        pass
    results = {}
    for label, way in ways.items():
        if args.ways and label not in args.ways:
            continue
        times = []
        for _ in range(args.repeats):
            times.append(way(checkpoint, names))
            mx.clear_cache()
        median = statistics.median(times)
        results[label] = {"median_s": median, "times_s": times, "gb_per_s": nbytes / 1e9 / median}
        print(f"  {label:<20} {median:.2f} s  {nbytes / 1e9 / median:.2f} GB/s")
    if args.processor:
        results["prompt processor"] = time_processor(checkpoint)
    if args.json is not None:
        args.json.write_text(json.dumps({"bytes": nbytes, "tensors": len(names), "results": results}, indent=2))


if __name__ == "__main__":
    main()

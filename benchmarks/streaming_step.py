"""One DiT step with the blocks resident, and streamed from the checkpoint (`--low-memory`):
how much streaming costs per step, and how much of the reading hides behind the computing.

    python benchmarks/streaming_step.py CHECKPOINT                      # 768x512x121 (stage 2's size)
    python benchmarks/streaming_step.py CHECKPOINT --quantization int8 --size 384x256x121

Three timings, each the median of --iters after a warm-up:
  resident   a forward with every block held (the ledger's default)
  read       one pass over the streamed blocks that only reads (and converts) each one's weights
  streamed   a forward reading each block as it runs, the next one's read queued ahead
overlap = (resident + read - streamed) / min(resident, read): 1 when the reading hides entirely
behind the computing (or the reverse), 0 when they take turns.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transformer_step import mlx_modalities, numpy_inputs, token_layout  # noqa: E402

from LTX_2_MLX.loader.checkpoint import Checkpoint  # noqa: E402
from LTX_2_MLX.pipelines import ModelLedger  # noqa: E402


def modalities(section: dict, size: str, fps: float = 24.0):
    width, height, frames = (int(v) for v in size.split("x"))
    return mlx_modalities(numpy_inputs(section, token_layout(width, height, frames, fps, 1024), fps))


def median_seconds(fn, iters: int) -> tuple[float, float]:
    """(median seconds of fn() after one warm-up, peak GB over the timed runs)."""
    fn()
    mx.synchronize()
    mx.reset_peak_memory()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        fn()
        mx.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times), mx.get_peak_memory() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--quantization", choices=["fp8", "int8", "int4"], default=None)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    checkpoint = Checkpoint.open(args.checkpoint)
    section = checkpoint.config("transformer")["transformer"]
    video, audio = modalities(section, args.size)
    results = {"size": args.size, "quantization": args.quantization, "device": str(mx.default_device())}

    def forward_seconds(model) -> tuple[float, float]:
        return median_seconds(lambda: mx.eval(model(video, audio)), args.iters)

    results["resident_s"], results["resident_peak_gb"] = forward_seconds(
        ModelLedger(checkpoint, quantization=args.quantization).transformer()
    )
    mx.clear_cache()

    streamed = ModelLedger(checkpoint, quantization=args.quantization, low_memory=True).transformer()
    blocks = streamed.velocity_model.transformer_blocks

    def read_only() -> None:
        for block in blocks:
            mx.eval(block.parameters())

    results["read_s"], results["read_peak_gb"] = median_seconds(read_only, args.iters)
    results["streamed_s"], results["streamed_peak_gb"] = forward_seconds(streamed)
    read_bytes = checkpoint.stored_bytes("model.diffusion_model.transformer_blocks.")
    hidden = results["resident_s"] + results["read_s"] - results["streamed_s"]
    results["overlap"] = hidden / min(results["resident_s"], results["read_s"])
    results["read_gb_per_s"] = read_bytes / 1e9 / results["read_s"]
    print(f"DiT step {args.size}{', ' + args.quantization if args.quantization else ''} ({results['device']}):")
    print(f"  resident  {results['resident_s']:.3f} s  peak {results['resident_peak_gb']:.2f} GB")
    print(f"  read      {results['read_s']:.3f} s  ({read_bytes / 1e9:.1f} GB of blocks, "
          f"{results['read_gb_per_s']:.2f} GB/s)")  # fmt: skip
    print(f"  streamed  {results['streamed_s']:.3f} s  peak {results['streamed_peak_gb']:.2f} GB")
    print(f"  streaming costs {results['streamed_s'] - results['resident_s']:.3f} s per step; "
          f"overlap {results['overlap']:.2f} (1: the shorter of reading and computing hidden entirely)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

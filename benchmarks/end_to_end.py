"""The whole generation, phase by phase: seconds, peak MLX memory and the process's peak RSS per
phase, with the memory planner's estimate beside each measured phase.

    python benchmarks/end_to_end.py --checkpoint-path DIT.safetensors --gemma-path GEMMA_DIR \\
        --spatial-upscaler-path UP.safetensors --precisions fp8 int8 --modes default low-memory --json $OUT/e2e.json
    python benchmarks/end_to_end.py --tiny --json /tmp/e2e.json     # the tiny test models on the CPU, seconds

Each (pipeline, precision, mode) runs in a child process of its own, so one run's peak RSS is
not another's. Precisions: bf16 (the checkpoint as stored, in bfloat16), fp8 / int8 / int4
(`--quantization`, Gemma at 8 bits for int8 and 4 bits for int4). Modes: `default` (the DiT
resident) and `low-memory` (its blocks streamed). Phases are delimited where the pipeline asks
the ledger for a model (Gemma, the prompt processor, the DiT, the upscaler, the audio decoder,
the video decoder) and where stage 2 starts; `mx.reset_peak_memory()` at each boundary.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

PRECISIONS = {"bf16": (None, None), "fp8": ("fp8", None), "int8": ("int8", 8), "int4": ("int4", 4)}
MODES = ("default", "low-memory")


class PhaseMeter:
    """Seconds, peak MLX memory and peak RSS of each phase; `start(name)` closes the current one."""

    def __init__(self):
        self.phases: list[dict] = []
        self._current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self.stop()
        mx.synchronize()
        mx.reset_peak_memory()
        self._current = (name, time.perf_counter())

    def stop(self) -> None:
        if self._current is None:
            return
        mx.synchronize()
        name, started = self._current
        self.phases.append({
            "phase": name, "seconds": time.perf_counter() - started, "peak_bytes": mx.get_peak_memory(),
            "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        })  # fmt: skip
        self._current = None


def _before(meter: PhaseMeter, owner, attribute: str, name) -> None:
    """Start phase `name` (a string, or a function of the call count) whenever owner.attribute is called."""
    original = getattr(owner, attribute)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        meter.start(name(calls[0]) if callable(name) else name)
        return original(*args, **kwargs)

    setattr(owner, attribute, wrapped)


def instrument(meter: PhaseMeter, two_stage: bool) -> None:
    from LTX_2_MLX.loader import text_encoder
    from LTX_2_MLX.pipelines import common
    from LTX_2_MLX.pipelines.model_ledger import ModelLedger

    _before(meter, text_encoder, "load_text_encoder", "Gemma encode")
    _before(meter, text_encoder, "load_embeddings_processor", "prompt processor")
    _before(meter, ModelLedger, "transformer", lambda n: "DiT stage 1" if two_stage else "DiT")
    _before(meter, ModelLedger, "spatial_upscaler", "upscaler")
    _before(meter, common, "denoise_stage", "DiT stage 2")  # refine_upscaled's call; stage 1 calls its own import
    _before(meter, ModelLedger, "audio_decoder_and_vocoder", "audio decode")
    _before(meter, ModelLedger, "video_decoder", "VAE decode")


def run_one(args) -> dict:
    """One generation in this process, through the CLI's own preparation (the planner included)."""
    from LTX_2_MLX.cli.commands import DTYPES
    from LTX_2_MLX.cli.generate import generate, prepare_generation

    quantization, bits = PRECISIONS[args.precision]
    command = [
        "--checkpoint-path", args.checkpoint_path, "--gemma-path", args.gemma_path, "--prompt", "a red fox in snow",
        "--pipeline", args.pipeline, "--height", str(args.height), "--width", str(args.width),
        "--num-frames", str(args.num_frames), "--output-path", str(Path(args.scratch) / "out.mp4"),
        "--dtype", args.dtype, "--skip-memory-check",
    ]  # fmt: skip
    command += ["--spatial-upscaler-path", args.spatial_upscaler_path] if args.spatial_upscaler_path else []
    command += ["--quantization", quantization] if quantization else []
    command += ["--text-encoder-bits", str(bits)] if bits else []
    command += ["--low-memory"] if args.mode == "low-memory" else []
    if args.distilled_lora:
        command += ["--distilled-lora", args.distilled_lora, "0.6"]
    context = generate.make_context("generate", command)
    pipeline, request, ledger, _ = prepare_generation(dict(context.params))
    plan = ledger.memory_plan
    meter = PhaseMeter()
    instrument(meter, pipeline.two_stage)
    started = time.perf_counter()
    result = pipeline(ledger, plan.tiling_config())(request)
    frames = sum(len(chunk) for chunk in result.frames)  # the video decodes as it is consumed
    meter.stop()
    total = time.perf_counter() - started
    for phase in meter.phases:
        estimate = next((p for p in plan.phases if p.name == phase["phase"]), None)
        phase["estimate_bytes"] = estimate.peak if estimate else None
        phase["estimate_ratio"] = estimate.peak / phase["peak_bytes"] if estimate and phase["peak_bytes"] else None
    return {
        "pipeline": args.pipeline, "precision": args.precision, "mode": args.mode, "dtype": str(DTYPES[args.dtype]),
        "size": f"{args.width}x{args.height}x{args.num_frames}", "frames": frames, "seconds": total,
        "low_memory_ledger": getattr(ledger, "low_memory", None), "phases": meter.phases,
        "plan": plan.table(), "device": str(mx.default_device()),
    }  # fmt: skip


def tiny_files(folder: Path) -> dict:
    """The tiny complete model files the tests build (needs the PyTorch reference installed)."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    import conftest  # noqa: F401  (registers the reference's import placeholders)
    from generate_fixtures import build_model_files

    class Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name, dir=folder))

    checkpoint, gemma, _, upscaler, lora, _ = build_model_files(Factory())
    return {"checkpoint_path": str(checkpoint), "gemma_path": str(gemma), "spatial_upscaler_path": str(upscaler),
            "distilled_lora": str(lora)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny test models at 128x128x17 on the CPU")
    parser.add_argument("--checkpoint-path")
    parser.add_argument("--gemma-path")
    parser.add_argument("--spatial-upscaler-path")
    parser.add_argument("--distilled-lora", help="for --pipelines two-stage")
    parser.add_argument("--pipelines", nargs="+", default=["distilled"], choices=["distilled", "two-stage"])
    parser.add_argument("--precisions", nargs="+", default=["fp8", "int8"], choices=list(PRECISIONS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES of the output")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one run, JSON on stdout
    parser.add_argument("--pipeline", default="distilled", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.width, args.height, args.num_frames = (int(v) for v in args.size.split("x"))
    if args.one:
        if args.tiny:
            mx.set_default_device(mx.cpu)
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return

    scratch = Path(tempfile.mkdtemp(prefix="end-to-end-"))
    if args.tiny:
        args.width, args.height, args.num_frames, args.dtype = 128, 128, 17, "float32"
        for key, value in tiny_files(scratch).items():
            setattr(args, key, getattr(args, key) or value)
    if not (args.checkpoint_path and args.gemma_path):
        parser.error("give --checkpoint-path and --gemma-path (and --spatial-upscaler-path), or --tiny")
    runs = []
    for pipeline in args.pipelines:
        for precision in args.precisions:
            for mode in args.modes:
                child = [sys.executable, __file__, "--one", "--pipeline", pipeline, "--precision", precision,
                         "--mode", mode, "--size", f"{args.width}x{args.height}x{args.num_frames}",
                         "--dtype", args.dtype, "--scratch", str(scratch), "--checkpoint-path", args.checkpoint_path,
                         "--gemma-path", args.gemma_path]  # fmt: skip
                child += ["--tiny"] if args.tiny else []
                child += ["--spatial-upscaler-path", args.spatial_upscaler_path] if args.spatial_upscaler_path else []
                child += ["--distilled-lora", args.distilled_lora] if pipeline == "two-stage" else []
                done = subprocess.run(child, capture_output=True, text=True, env=dict(os.environ))
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    runs.append({"pipeline": pipeline, "precision": precision, "mode": mode,
                                 "error": (done.stderr or done.stdout).strip().splitlines()[-1:]})  # fmt: skip
                    print(f"{pipeline} {precision} {mode}: FAILED {runs[-1]['error']}", flush=True)
                    continue
                run = json.loads(lines[-1][len("RESULT ") :])
                runs.append(run)
                print(f"\n{pipeline} {precision} {mode}: {run['seconds']:.1f} s, {run['frames']} frames "
                      f"({run['device']})")  # fmt: skip
                print(f"  {'phase':<17} {'seconds':>8} {'peak':>10} {'estimate':>10} {'est/meas':>8} {'RSS':>10}")
                for phase in run["phases"]:
                    estimate = phase["estimate_bytes"]
                    print(f"  {phase['phase']:<17} {phase['seconds']:>8.2f} {phase['peak_bytes'] / 2**30:>8.3f}G "
                          + (f"{estimate / 2**30:>8.3f}G {phase['estimate_ratio']:>8.2f}" if estimate else f"{'-':>19}")
                          + f" {phase['rss_peak_bytes'] / 2**30:>8.2f}G", flush=True)  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({"size": f"{args.width}x{args.height}x{args.num_frames}", "runs": runs},
                                        indent=2))  # fmt: skip
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

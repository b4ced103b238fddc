"""The whole generation, phase by phase: seconds, peak MLX memory and the process's peak RSS per
phase, with the memory planner's estimate beside each measured phase.

    python benchmarks/end_to_end.py --checkpoint-path DIT.safetensors --gemma-path GEMMA_DIR \\
        --spatial-upscaler-path UP.safetensors --precisions fp8 int8 --modes default low-memory --json $OUT/e2e.json
    python benchmarks/end_to_end.py --tiny --json /tmp/e2e.json     # the tiny test models on the CPU, seconds
    python benchmarks/end_to_end.py --tiny --reference --precisions bf16   # and ltx-pipelines on them (float32,
                                                                            # with the parity tests' stand-ins)

Each (pipeline, precision, mode) runs in a child process of its own, so one run's peak RSS is
not another's. `--warmup W --repeats N` runs every job W + N times, in rounds (MLX and the
reference alternate), and compares medians of the last N: the first run on a machine compiles
MLX's kernels (cached on disk after). Precisions: bf16 (the checkpoint as stored, in bfloat16), fp8 / int8 / int4
(`--quantization`, Gemma at 8 bits for int8 and 4 bits for int4). Modes: `default` (the DiT
resident) and `low-memory` (its blocks streamed). Phases are delimited where the pipeline asks
the ledger for a model (Gemma, the prompt processor, the DiT, the upscaler, the audio decoder,
the video decoder) and where stage 2 starts; `mx.reset_peak_memory()` at each boundary.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_timeline import MemorySampler, draw_runs  # noqa: E402

PRECISIONS = {"bf16": (None, None), "fp8": ("fp8", None), "int8": ("int8", 8), "int4": ("int4", 4)}
MODES = ("default", "low-memory")


class PhaseMeter:
    """Seconds, peak accelerator memory and peak RSS of each phase; `start(name)` closes the
    current one. MLX's peak by default; `torch_cuda=True` for the reference's."""

    def __init__(self, torch_cuda: bool = False, on_start=None):
        self.phases: list[dict] = []
        self._current: tuple[str, float] | None = None
        self._on_start = on_start or (lambda name: None)
        if torch_cuda:
            import torch

            self._sync, self._reset = torch.cuda.synchronize, torch.cuda.reset_peak_memory_stats
            self._peak = torch.cuda.max_memory_allocated
        else:
            self._sync, self._reset, self._peak = mx.synchronize, mx.reset_peak_memory, mx.get_peak_memory

    def start(self, name: str) -> None:
        self.stop()
        self._sync()
        self._reset()
        self._on_start(name)
        self._current = (name, time.perf_counter())

    def stop(self) -> None:
        if self._current is None:
            return
        self._sync()
        name, started = self._current
        self.phases.append({
            "phase": name, "seconds": time.perf_counter() - started, "peak_bytes": self._peak(),
            "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        })  # fmt: skip
        self._current = None

    def merged(self) -> list[dict]:
        """Phases in order of first start; one that ran in pieces (the reference's VAE decode is
        built before the audio decodes and runs after) as the sum of its seconds, the max of its peaks."""
        merged: dict[str, dict] = {}
        for phase in self.phases:
            if phase["phase"] in merged:
                known = merged[phase["phase"]]
                known["seconds"] += phase["seconds"]
                for key in ("peak_bytes", "rss_peak_bytes"):
                    known[key] = max(known[key], phase[key])
            else:
                merged[phase["phase"]] = dict(phase)
        return list(merged.values())


def _before(meter: PhaseMeter, owner, attribute: str, name) -> None:
    """Start phase `name` (a string, or a function of the call count giving a name or None for
    no new phase) whenever owner.attribute is called."""
    original = getattr(owner, attribute)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        phase = name(calls[0]) if callable(name) else name
        if phase is not None:
            meter.start(phase)
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
    command += ["--memory-budget", str(args.memory_budget)] if args.memory_budget else []
    if args.distilled_lora:
        command += ["--distilled-lora", args.distilled_lora, "0.6"]
    context = generate.make_context("generate", command)
    pipeline, request, ledger, _ = prepare_generation(dict(context.params))
    plan = ledger.memory_plan
    sampler = MemorySampler(interval=0.05)
    meter = PhaseMeter(on_start=sampler.mark)
    instrument(meter, pipeline.two_stage)
    mx.set_memory_limit(plan.memory_limit)  # as the CLI's generate
    sampler.start()
    started = time.perf_counter()
    result = pipeline(ledger, plan.tiling_config())(request)
    frames = sum(len(chunk) for chunk in result.frames)  # the video decodes as it is consumed
    meter.stop()
    total = time.perf_counter() - started
    sampler.stop()
    phases = meter.merged()
    for phase in phases:
        estimate = next((p for p in plan.phases if p.name == phase["phase"]), None)
        phase["estimate_bytes"] = estimate.peak if estimate else None
        phase["estimate_ratio"] = estimate.peak / phase["peak_bytes"] if estimate and phase["peak_bytes"] else None
    return {
        "pipeline": args.pipeline, "precision": args.precision, "mode": args.mode, "dtype": str(DTYPES[args.dtype]),
        "size": f"{args.width}x{args.height}x{args.num_frames}", "frames": frames, "seconds": total,
        "low_memory_ledger": getattr(ledger, "low_memory", None), "phases": phases, "side": "mlx",
        "plan": plan.table(), "device": str(mx.default_device()), "memory_budget_gib": args.memory_budget,
        "memory_limit_bytes": plan.memory_limit, "timeline": sampler.samples,
    }  # fmt: skip


def run_reference(args) -> dict:
    """The same generation through ltx-pipelines' DistilledPipeline (PyTorch, CUDA when there is
    one), phases split where it asks its ledger for a model, calls upsample_video and starts the
    second denoise_audio_video; torch.cuda.max_memory_allocated per phase."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from random_weights import import_reference

    import_reference()
    import ltx_core.text_encoders.gemma.encoders.encoder_configurator as gemma_configurator
    from ltx_core.model.video_vae import TilingConfig
    from ltx_core.quantization import QuantizationPolicy
    from ltx_pipelines import distilled
    from ltx_pipelines.utils.model_ledger import ModelLedger
    from transformers import Gemma3Config

    if args.pipeline != "distilled":
        raise SystemExit("--reference runs the distilled pipeline only")
    # ltx-core builds Gemma from its own copy of the 12B config; the folder's config.json is that
    # config (or a --scale-down of it), so the reference builds what the files hold.
    config = json.loads((Path(args.gemma_path) / "config.json").read_text())
    gemma_configurator.GEMMA3_CONFIG_FOR_LTX = Gemma3Config.from_dict(config)
    cuda = torch.cuda.is_available()
    if not cuda:  # the pipeline synchronizes CUDA unconditionally; on the CPU (a script check) nothing to wait for
        torch.cuda.synchronize = lambda *args: None
    device = torch.device("cuda" if cuda else "cpu")
    meter = PhaseMeter(torch_cuda=cuda) if cuda else PhaseMeter()
    _before(meter, ModelLedger, "text_encoder", "Gemma encode")
    _before(meter, ModelLedger, "gemma_embeddings_processor", "prompt processor")
    _before(meter, ModelLedger, "video_encoder", lambda n: "DiT stage 1" if n == 1 else None)
    _before(meter, distilled, "upsample_video", "upscaler")
    _before(meter, distilled, "denoise_audio_video", lambda n: "DiT stage 2" if n == 2 else None)
    _before(meter, ModelLedger, "video_decoder", "VAE decode")
    _before(meter, ModelLedger, "audio_decoder", "audio decode")
    quantization = {"bf16": None, "fp8": QuantizationPolicy.fp8_cast()}.get(args.precision, "unsupported")
    if quantization == "unsupported":
        raise SystemExit(f"--reference: ltx-core has no {args.precision} (bf16 and fp8 only)")
    if args.tiny:  # the parity tests' stand-ins for what ltx-pipelines assumes of the real models
        from ltx_pipelines.utils import helpers
        from pipeline_harness import Float32Torch, TinyAudioShape, use_tiny_text_encoder

        from LTX_2_MLX.loader.checkpoint import read_config

        helpers.AudioLatentShape = TinyAudioShape
        distilled.torch = Float32Torch()  # in float32, as the stand-in Gemma and processor are
    pipeline = distilled.DistilledPipeline(args.checkpoint_path, args.gemma_path, args.spatial_upscaler_path, [],
                                           device=device, quantization=quantization)  # fmt: skip
    if args.tiny:
        pipeline.pipeline_components.video_latent_channels = read_config(args.checkpoint_path)["vae"]["latent_channels"]
        use_tiny_text_encoder(pipeline.model_ledger, args.gemma_path)
        _before(meter, pipeline.model_ledger, "text_encoder", "Gemma encode")
        _before(meter, pipeline.model_ledger, "gemma_embeddings_processor", "prompt processor")
    started = time.perf_counter()
    with torch.inference_mode():
        video, _ = pipeline(
            prompt="a red fox in snow",
            seed=0,
            height=args.height,
            width=args.width,
            num_frames=args.num_frames,
            frame_rate=24.0,
            images=[],
            tiling_config=TilingConfig.default(),
        )
        meter.start("VAE decode")  # the video decodes as it is consumed
        frames = sum(len(chunk) for chunk in video)
    meter.stop()
    return {
        "side": "ltx-pipelines", "pipeline": args.pipeline, "precision": args.precision, "mode": "default",
        "dtype": "torch.bfloat16", "size": f"{args.width}x{args.height}x{args.num_frames}", "frames": frames,
        "seconds": time.perf_counter() - started, "phases": meter.merged(), "device": str(device),
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


def print_run(run: dict) -> None:
    budget = f", budget {run['memory_budget_gib']} GiB" if run.get("memory_budget_gib") else ""
    print(f"\n{run['side']} {run['pipeline']} {run['precision']} {run['mode']}{budget}: {run['seconds']:.1f} s, "
          f"{run['frames']} frames ({run['device']})")  # fmt: skip
    print(f"  {'phase':<17} {'seconds':>8} {'peak':>10} {'estimate':>10} {'est/meas':>8} {'RSS':>10}")
    for phase in run["phases"]:
        estimate = phase.get("estimate_bytes")
        print(f"  {phase['phase']:<17} {phase['seconds']:>8.2f} {phase['peak_bytes'] / 2**30:>8.3f}G "
              + (f"{estimate / 2**30:>8.3f}G {phase['estimate_ratio']:>8.2f}" if estimate else f"{'-':>19}")
              + f" {phase['rss_peak_bytes'] / 2**30:>8.2f}G", flush=True)  # fmt: skip


def _median_run(runs: list[dict]) -> dict:
    """One run's fields with the median seconds of `runs` (total and per phase) and their largest
    peaks."""
    merged = dict(runs[0], seconds=statistics.median(run["seconds"] for run in runs), repeats=len(runs))
    phases = []
    for phase in runs[0]["phases"]:
        same = [p for run in runs for p in run["phases"] if p["phase"] == phase["phase"]]
        phases.append(dict(phase, seconds=statistics.median(p["seconds"] for p in same),
                           peak_bytes=max(p["peak_bytes"] for p in same)))  # fmt: skip
    merged["phases"] = phases
    return merged


def print_side_by_side(runs: list[dict]) -> None:
    """MLX's default-mode runs beside the reference's at the same precision, phase by phase: the
    medians of the runs after warm-up, and their ratio."""
    timed = [run for run in runs if "phases" in run and not run.get("warmup")]
    for precision in dict.fromkeys(run["precision"] for run in timed if run["side"] == "ltx-pipelines"):
        reference = [run for run in timed if run["side"] == "ltx-pipelines" and run["precision"] == precision]
        ours = [run for run in timed if run["side"] == "mlx" and run["mode"] == "default"
                and run["pipeline"] == "distilled" and run["precision"] == precision]  # fmt: skip
        if not ours:
            continue
        mine, theirs_run = _median_run(ours), _median_run(reference)
        print(f"\ndistilled {precision}: MLX vs ltx-pipelines, medians of {len(ours)} and {len(reference)} runs "
              f"(total {mine['seconds']:.1f} s vs {theirs_run['seconds']:.1f} s, "
              f"MLX / ltx-pipelines {mine['seconds'] / theirs_run['seconds']:.2f})")  # fmt: skip
        print(f"  {'phase':<17} {'MLX s':>8} {'ref s':>8} {'MLX peak':>10} {'ref peak':>10}")
        theirs = {phase["phase"]: phase for phase in theirs_run["phases"]}
        for phase in mine["phases"]:
            other = theirs.get(phase["phase"])
            ref_s = f"{other['seconds']:>8.2f}" if other else f"{'-':>8}"
            ref_peak = f"{other['peak_bytes'] / 2**30:>9.2f}G" if other else f"{'-':>10}"
            print(f"  {phase['phase']:<17} {phase['seconds']:>8.2f} {ref_s} {phase['peak_bytes'] / 2**30:>9.2f}G "
                  f"{ref_peak}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny test models at 128x128x17 on the CPU")
    parser.add_argument("--checkpoint-path")
    parser.add_argument("--gemma-path")
    parser.add_argument("--spatial-upscaler-path")
    parser.add_argument("--distilled-lora", help="for --pipelines two-stage")
    parser.add_argument(
        "--random-weights",
        type=Path,
        default=None,
        help="write (or reuse) full-size random model files here; the default when no paths are given",
    )
    parser.add_argument(
        "--storage",
        default="fp8",
        choices=["bf16", "fp8"],
        help="how the random DiT is stored (bf16 + Gemma 12B need ~64 GB of disk; fp8 ~45 GB)",
    )
    parser.add_argument("--scale-down", type=int, default=1, help="random weights narrower and shallower (2-16)")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also run ltx-pipelines' DistilledPipeline on the same files (bf16 / fp8 precisions)",
    )
    parser.add_argument("--pipelines", nargs="+", default=["distilled"], choices=["distilled", "two-stage"])
    parser.add_argument("--precisions", nargs="+", default=["fp8", "int8"], choices=list(PRECISIONS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES of the output")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--memory-budget", type=float, default=None, help="GiB, passed to every MLX run")
    parser.add_argument("--plots", type=Path, default=None, help="a memory-over-time PNG per MLX run in this folder")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of every job (medians compared)")
    parser.add_argument("--warmup", type=int, default=0, help="runs of every job before the timed ones")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one run, JSON on stdout
    parser.add_argument("--side", default="mlx", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="distilled", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    args.width, args.height, args.num_frames = (int(v) for v in args.size.split("x"))
    if args.one:
        if args.tiny:
            mx.set_default_device(mx.cpu)
        result = run_reference(args) if args.side == "ltx-pipelines" else run_one(args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    scratch = Path(tempfile.mkdtemp(prefix="end-to-end-"))
    if args.tiny:
        args.width, args.height, args.num_frames, args.dtype = 128, 128, 17, "float32"
        for key, value in tiny_files(scratch).items():
            setattr(args, key, getattr(args, key) or value)
    elif args.random_weights is not None or not (args.checkpoint_path or args.gemma_path):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from random_weights import write_model_files

        folder = args.random_weights or Path(tempfile.gettempdir()) / "ltx2-random-weights"
        folder.mkdir(parents=True, exist_ok=True)
        for key, value in write_model_files(folder, args.storage, args.scale_down).items():
            setattr(args, key, getattr(args, key) or value)
    if not (args.checkpoint_path and args.gemma_path):
        parser.error("give --checkpoint-path and --gemma-path (and --spatial-upscaler-path), or --random-weights, "
                     "or --tiny")  # fmt: skip
    jobs = [("mlx", pipeline, precision, mode) for pipeline in args.pipelines for precision in args.precisions
            for mode in args.modes]  # fmt: skip
    if args.reference:
        jobs += [("ltx-pipelines", "distilled", precision, "default") for precision in args.precisions
                 if precision in ("bf16", "fp8")]  # fmt: skip
    runs = []
    rounds = args.warmup + args.repeats
    for round_, (side, pipeline, precision, mode) in ((r, job) for r in range(rounds) for job in jobs):
        child = [
            sys.executable,
            __file__,
            "--one",
            "--side",
            side,
            "--pipeline",
            pipeline,
            "--precision",
            precision,
            "--mode",
            mode,
            "--size",
            f"{args.width}x{args.height}x{args.num_frames}",
            "--dtype",
            args.dtype,
            "--scratch",
            str(scratch),
            *(["--memory-budget", str(args.memory_budget)] if args.memory_budget else []),
            "--checkpoint-path",
            args.checkpoint_path,
            "--gemma-path",
            args.gemma_path,
        ]
        child += ["--tiny"] if args.tiny else []
        child += ["--spatial-upscaler-path", args.spatial_upscaler_path] if args.spatial_upscaler_path else []
        child += ["--distilled-lora", args.distilled_lora] if pipeline == "two-stage" else []
        done = subprocess.run(child, capture_output=True, text=True, env=dict(os.environ))
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            runs.append({"side": side, "pipeline": pipeline, "precision": precision, "mode": mode,
                         "error": (done.stderr or done.stdout).strip().splitlines()[-3:]})  # fmt: skip
            print(f"{side} {pipeline} {precision} {mode}: FAILED {runs[-1]['error']}", flush=True)
            continue
        runs.append(dict(json.loads(lines[-1][len("RESULT ") :]), round=round_, warmup=round_ < args.warmup))
        if rounds > 1:
            print(f"\nround {round_ + 1} of {rounds}{' (warm-up)' if round_ < args.warmup else ''}", end="")
        print_run(runs[-1])
        if args.json is not None:  # after every run, so a run cut short keeps what was measured
            args.json.write_text(json.dumps({"size": f"{args.width}x{args.height}x{args.num_frames}", "runs": runs},
                                            indent=2))  # fmt: skip
    print_side_by_side(runs)
    if args.json is not None:
        print(f"wrote {args.json}")
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        for path in draw_runs([run for run in runs if run.get("side") == "mlx"], args.plots):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()

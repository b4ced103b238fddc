"""The memory planner's estimates, as the planner computes them now, against the peaks measured
by earlier `end_to_end.py` runs on full-size random weights: each phase's estimate / measured.

    python benchmarks/plan_accuracy.py --storage fp8 e2e_fp8.json [more.json ...]
    python benchmarks/plan_accuracy.py --storage bf16 e2e_bf16.json

The planner reads only headers, so the full-size files are stood in for by header-only sparse
files (`random_weights.py`'s names, shapes and dtypes; no data written, a few MB of disk) in
--scratch. Fused attention is assumed (a GPU's: no materialised scores), as where the runs were
measured.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_weights  # noqa: E402

PRECISIONS = {"bf16": (None, None), "fp8": ("fp8", None), "int8": ("int8", 8), "int4": ("int4", 4)}


def header_only(path: Path, specs: list, metadata: dict) -> None:
    """A safetensors header for `specs`, the file extended (sparse) to the size it declares."""
    header, data = random_weights.safetensors_header(specs, metadata)
    with open(path, "wb") as file:
        file.write(header)
        file.truncate(len(header) + data)


def stand_ins(folder: Path, storage: str) -> dict:
    configs = random_weights.model_configs(1)
    specs, metadata = random_weights.model_checkpoint_specs(configs, storage)
    paths = {"checkpoint": folder / f"checkpoint-{storage}.safetensors", "gemma": folder / "gemma",
             "upscaler": folder / "upscaler.safetensors"}  # fmt: skip
    paths["gemma"].mkdir(parents=True, exist_ok=True)
    header_only(paths["checkpoint"], specs, metadata)
    header_only(paths["upscaler"], random_weights.upscaler_specs(configs["upscaler"]),
                {"config": json.dumps(configs["upscaler"])})  # fmt: skip
    (paths["gemma"] / "config.json").write_text(json.dumps(configs["gemma"]))
    for index, shard in enumerate(random_weights._shards(random_weights.gemma_specs(configs["gemma"]))):
        header_only(paths["gemma"] / f"model-{index + 1:05d}.safetensors", shard, {"format": "pt"})
    return paths


def compare(results: list[Path], storage: str, scratch: Path) -> list[dict]:
    """Per measured MLX run, its phases' measured peaks beside the planner's estimates now."""
    import mlx.core as mx

    import LTX_2_MLX.pipelines.memory_plan as memory_plan
    from LTX_2_MLX.cli.commands import DTYPES
    from LTX_2_MLX.pipelines import PIPELINES

    fused = memory_plan.attention_scores_bytes
    memory_plan.attention_scores_bytes = lambda *args, **kwargs: 0  # the GPU's fused attention
    try:
        paths = stand_ins(scratch, storage)
        compared = []
        for result in results:
            for run in json.loads(Path(result).read_text())["runs"]:
                if "phases" not in run or run.get("side") != "mlx":
                    continue
                quantization, bits = PRECISIONS[run["precision"]]
                width, height, frames = (int(v) for v in run["size"].split("x"))
                inputs = memory_plan.PlanInputs(
                    paths["checkpoint"], PIPELINES[run["pipeline"]], height, width, frames,
                    dtype=DTYPES.get(run["dtype"].removeprefix("mlx.core."), mx.bfloat16), quantization=quantization,
                    gemma_path=paths["gemma"], text_encoder_bits=bits, spatial_upscaler_path=paths["upscaler"],
                )  # fmt: skip
                budget = int((run.get("memory_budget_gib") or 2**20) * 2**30)
                plan = memory_plan.plan_generation(inputs, budget, low_memory=run["mode"] == "low-memory")
                phases = [{"phase": phase["phase"], "measured": phase["peak_bytes"],
                           "estimate": plan.phase(phase["phase"]).peak} for phase in run["phases"]]  # fmt: skip
                compared.append({"file": Path(result).name, "precision": run["precision"], "mode": run["mode"],
                                 "tiles": plan.tile_size, "phases": phases})  # fmt: skip
        return compared
    finally:
        memory_plan.attention_scores_bytes = fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="end_to_end.py --json files")
    parser.add_argument("--storage", choices=["bf16", "fp8"], required=True, help="how the measured DiT was stored")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/plan-accuracy"))
    args = parser.parse_args()
    for run in compare(args.results, args.storage, args.scratch):
        print(f"\n{run['file']}: {run['precision']} {run['mode']} ({args.storage} file), decode tiles {run['tiles']}")
        print(f"  {'phase':<17} {'measured':>9} {'estimate':>9} {'est/meas':>8}")
        for phase in run["phases"]:
            print(f"  {phase['phase']:<17} {phase['measured'] / 2**30:>8.2f}G {phase['estimate'] / 2**30:>8.2f}G "
                  f"{phase['estimate'] / phase['measured']:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

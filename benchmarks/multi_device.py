"""One guided denoising step of the one-stage pipeline on one GPU against two, at real size
with random weights: guidance-parallel and tensor-parallel (LTX_2_MLX.distributed).

    mlx.launch --backend nccl -n 2 -- python benchmarks/multi_device.py          # 2 GPUs, 768x512x121
    mlx.launch --backend ring -n 2 -- python benchmarks/multi_device.py --tiny   # a quick CPU check

The step is what `multi_modal_guider_denoising_func` runs with LTX-2's default guidance: four
DiT passes (prompt, negative prompt, STG at block 29, modality-isolated) through
`evaluate_passes`. The 19B config in configs/ltx2_19b.json, random bf16 weights built in
memory on each process (a tensor-parallel process builds only its share), 24 fps, 1,024
context tokens.

Measured, in one launch (rank 0 prints, --json writes the figures):
- one GPU: rank 0 alone runs the four passes with the whole model (rank 1 waits);
- guidance: each rank the whole model and two of the four passes, one all_gather;
- tensor: each rank half of every block, all four passes, all_sums inside the blocks.
The time of a step is the median over --iters after --warmup. Every collective of one step is
counted (calls and bytes), and each rank's share of the traffic over a ring (an all_sum sends
2(N-1)/N of its payload, an all_gather (N-1)/N of the gathered result) gives the estimated
transfer time of a step over a 10 and a 40 Gb/s link (Thunderbolt), latency not included.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from transformer_step import CONFIG, numpy_inputs, small_config, token_layout  # noqa: E402

from LTX_2_MLX.distributed import GuidanceParallelTransformer, connect_transformer, split_transformer  # noqa: E402
from LTX_2_MLX.guidance.perturbations import (  # noqa: E402
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from LTX_2_MLX.model.transformer import LTXModel, LTXModelConfig, LTXModelType, Modality, X0Model  # noqa: E402
from LTX_2_MLX.pipelines.denoising.guidance import TransformerPass, evaluate_passes  # noqa: E402

STG_BLOCK = 29  # LTX-2's default STG block
LINK_GBITS = (10, 40)


def random_model(config: dict, group: mx.distributed.Group | None, dtype: mx.Dtype) -> X0Model:
    """The DiT with random weights; cut to this rank's share first when `group` is given, so
    the lazy initialisers of the other shares are never evaluated. Same seed on every rank."""
    model = LTXModel(LTXModelConfig.from_checkpoint_config(config, LTXModelType.AudioVideo))
    if group is not None:
        split_transformer(model, group)
    mx.random.seed(0)
    params = []
    for name, value in tree_flatten(model.parameters()):
        params.append((name, (mx.random.normal(value.shape, dtype=dtype) * 0.02).astype(dtype)))
        mx.eval(params[-1][1])
    model.update(tree_unflatten(params))
    if group is not None:
        connect_transformer(model, group)
    mx.eval(model.parameters())
    return X0Model(model)


def weight_bytes(model: X0Model) -> int:
    return sum(value.nbytes for _, value in tree_flatten(model.parameters()))


def guided_passes(section: dict, layout: dict, fps: float, dtype: mx.Dtype) -> list[TransformerPass]:
    """The four passes of a step with LTX-2's default guidance (CFG, STG, modality)."""
    inputs = numpy_inputs(section, layout, fps)
    negative = numpy_inputs(section, layout, fps, seed=1)

    def modality(latent, positions, context, timesteps) -> Modality:
        return Modality(
            latent=mx.array(latent).astype(dtype), sigma=mx.array([0.7]),
            timesteps=mx.array(timesteps), positions=mx.array(positions),
            context=mx.array(context).astype(dtype), context_mask=None,
        )  # fmt: skip

    video, audio = modality(*inputs["video"]), modality(*inputs["audio"])
    negative_video = modality(*inputs["video"][:2], *negative["video"][2:])
    negative_audio = modality(*inputs["audio"][:2], *negative["audio"][2:])
    stg_block = min(STG_BLOCK, section["num_layers"] - 1)

    def perturbed(*kinds: tuple[PerturbationType, list[int] | None]) -> BatchedPerturbationConfig:
        config = PerturbationConfig(perturbations=[Perturbation(type=kind, blocks=blocks) for kind, blocks in kinds])
        return BatchedPerturbationConfig(perturbations=[config])

    stg = perturbed(
        (PerturbationType.SKIP_VIDEO_SELF_ATTN, [stg_block]), (PerturbationType.SKIP_AUDIO_SELF_ATTN, [stg_block])
    )
    isolated = perturbed((PerturbationType.SKIP_A2V_CROSS_ATTN, None), (PerturbationType.SKIP_V2A_CROSS_ATTN, None))
    passes = [
        TransformerPass(video, audio),
        TransformerPass(negative_video, negative_audio),
        TransformerPass(video, audio, stg),
        TransformerPass(video, audio, isolated),
    ]
    mx.eval([[p.video.latent, p.video.context, p.audio.latent, p.audio.context] for p in passes])
    return passes


class CollectiveCounter:
    """Counts the all_sum / all_gather calls made while active, and their bytes."""

    def __init__(self):
        self.calls = {"all_sum": 0, "all_gather": 0}
        self.payload = {"all_sum": 0, "all_gather": 0}
        self.originals = {}

    def __enter__(self):
        for name in self.calls:
            original = getattr(mx.distributed, name)
            self.originals[name] = original

            def counted(x, *args, _name=name, _original=original, **kwargs):
                result = _original(x, *args, **kwargs)
                self.calls[_name] += 1
                self.payload[_name] += result.nbytes  # all_sum: the summed array; all_gather: what is gathered
                return result

            setattr(mx.distributed, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(mx.distributed, name, original)

    def sent_per_rank(self, size: int) -> float:
        """Bytes each rank sends over a ring for what was counted."""
        return self.payload["all_sum"] * 2 * (size - 1) / size + self.payload["all_gather"] * (size - 1) / size


def barrier(group: mx.distributed.Group) -> None:
    mx.eval(mx.distributed.all_sum(mx.ones((1,)), group=group))


def time_step(step, transformer, group: mx.distributed.Group, warmup: int, iters: int) -> list[float]:
    """Seconds per step on this rank after `warmup` steps, all ranks starting each together."""
    times = []
    for index in range(warmup + iters):
        barrier(group)
        start = time.perf_counter()
        step(transformer)
        mx.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="2-layer narrow model at 256x256x9 (checks the script)")
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--backend", default="any", help="mx.distributed backend (mlx.launch sets it up)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (rank 0)")
    args = parser.parse_args()

    group = mx.distributed.init(strict=True, backend=args.backend)
    size, rank = group.size(), group.rank()
    if size < 2:
        raise SystemExit(
            "start it with `mlx.launch -n 2 -- python benchmarks/multi_device.py`: it compares 1 and 2 ranks"
        )
    config = json.loads(CONFIG.read_text())
    if args.tiny:
        config, args.size, args.warmup, args.iters = small_config(config), "256x256x9", 1, 2
    dtype = mx.float32 if args.tiny else mx.bfloat16
    section = config["transformer"]
    width, height, frames = (int(v) for v in args.size.split("x"))
    layout = token_layout(width, height, frames, args.fps, 1024 if not args.tiny else 16)
    passes = guided_passes(section, layout, args.fps, dtype)

    def say(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    say(f"{size} ranks on {mx.default_device()}, {args.size}: {layout['f'] * layout['h'] * layout['w']} video + "
        f"{layout['audio']} audio tokens, {len(passes)} passes a step")  # fmt: skip
    results = {"ranks": size, "size": args.size, "passes": len(passes), "device": str(mx.default_device())}

    def step(transformer) -> None:
        mx.eval(evaluate_passes(transformer, passes))

    # One GPU: rank 0 alone, the whole model, the passes in turn.
    whole = random_model(config, None, dtype)
    results["weight_bytes_one"] = weight_bytes(whole)
    if rank == 0:
        single = [time_one(step, whole) for _ in range(args.warmup + args.iters)]
        results["step_s_one"] = statistics.median(single[args.warmup :])
        say(f"one GPU:   step {results['step_s_one']:.3f} s, weights {results['weight_bytes_one'] / 1e9:.2f} GB")
    barrier(group)

    # Guidance-parallel: the whole model on every rank, passes spread.
    spread = GuidanceParallelTransformer(whole, group)
    with CollectiveCounter() as counted:
        step(spread)
    times = time_step(step, spread, group, args.warmup, args.iters)
    results.update(step_s_guidance=statistics.median(times), guidance_collectives=counted.calls,
                   guidance_bytes_sent_per_rank=counted.sent_per_rank(size))  # fmt: skip
    whole = spread = None  # freed before the shares are built
    mx.clear_cache()
    mx.reset_peak_memory()

    # Tensor-parallel: a share of every block on each rank, every pass on every rank.
    sharded = random_model(config, group, dtype)
    results["weight_bytes_tensor_rank"] = weight_bytes(sharded)
    with CollectiveCounter() as counted:
        step(sharded)
    times = time_step(step, sharded, group, args.warmup, args.iters)
    results.update(step_s_tensor=statistics.median(times), tensor_collectives=counted.calls,
                   tensor_bytes_sent_per_rank=counted.sent_per_rank(size),
                   peak_bytes_tensor_rank=mx.get_peak_memory())  # fmt: skip

    if rank != 0:
        return
    one = results["step_s_one"]
    results["guidance_step_ratio"] = results["step_s_guidance"] / one
    results["tensor_step_ratio"] = results["step_s_tensor"] / one
    results["tensor_weight_ratio"] = results["weight_bytes_tensor_rank"] / results["weight_bytes_one"]
    for mode in ("guidance", "tensor"):
        sent = results[f"{mode}_bytes_sent_per_rank"]
        results[f"{mode}_link_s"] = {f"{gbits} Gb/s": sent * 8 / (gbits * 1e9) for gbits in LINK_GBITS}
        say(f"{mode:<9}  step {results[f'step_s_{mode}']:.3f} s ({results[f'{mode}_step_ratio']:.3f} of one GPU); "
            f"collectives {results[f'{mode}_collectives']}, {sent / 1e9:.3f} GB sent per rank a step -> "
            + ", ".join(f"{t:.2f} s at {link}" for link, t in results[f"{mode}_link_s"].items()))  # fmt: skip
    say(f"tensor     weights per rank {results['weight_bytes_tensor_rank'] / 1e9:.2f} GB "
        f"({results['tensor_weight_ratio']:.3f} of one), "
        f"peak {results['peak_bytes_tensor_rank'] / 1e9:.2f} GB")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
        say(f"wrote {args.json}")


def time_one(step, transformer) -> float:
    start = time.perf_counter()
    step(transformer)
    mx.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
